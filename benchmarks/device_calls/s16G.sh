#!/usr/bin/env bash
# session 16, GPU call G (#14 item 3 at 8B cost, what s16F1 / s16F left out): the pair inflated
# again (~45 s); AR, DFlash (head off) and Domino adaptive (trace on) in one wave at concurrency
# 4,8,16,32,64 (c=1 ran in both; the budget estimate that cut them is fixed), greedy equality vs
# AR on 64 prompts. Fits ~370 s.
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz
#   .device/jit-cache-h200.tar.xz (benchmarks/results moved aside)
SHA="$1"; TOTAL="${2:-575}"
source "$(dirname "$0")/lib.sh"
call_begin 16G "$SHA"
gpu_gb
inflate_8b
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --pair /tmp/p8b --dtype float16 --systems ar dflash domino --levels 16,64,4,32,8 --max-new-tokens 32 --eq-max-new-tokens 64 --max-total-tokens 16384 --gpu-mem-gb $GB --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt

find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 5 $R/inflate.txt; tail -n 45 $R/sbs.txt
