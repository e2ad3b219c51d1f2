#!/usr/bin/env bash
# session 17, GPU call G (#14 item 3 at 8B cost): the pair inflated (~45 s, or kept in /tmp/p8b
# from an earlier call on the warm machine); AR, DFlash (head off), Domino adaptive (trace on)
# and Domino fixed-16 at concurrency 16,64,4,32,8,2,1 in that order (session 16's s16G, which it
# replaces, plus fixed-16 and levels 2, 1, so that all four systems and all seven levels share
# one call; on an H100 the four 8B servers make two waves), greedy equality vs AR on 64 prompts.
# 575 s.
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz
#   .device/jit-cache-h200.tar.xz (benchmarks/results moved aside)
SHA="$1"; TOTAL="${2:-575}"
source "$(dirname "$0")/lib.sh"
call_begin 17G "$SHA"
gpu_gb
inflate_8b
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --pair /tmp/p8b --dtype float16 --systems ar dflash domino domino_fixed --levels 16,64,4,32,8,2,1 --max-new-tokens 32 --eq-max-new-tokens 64 --prefill-probe 32 --max-total-tokens 16384 --gpu-mem-gb $GB --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt

find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 5 $R/inflate.txt; tail -n 45 $R/sbs.txt
