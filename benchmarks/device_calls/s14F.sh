#!/usr/bin/env bash
# session 14, GPU call F (#13 item 5, #14 item 3 at 8B cost, #15 item 5 at 8B cost): the tiny
# pair inflated to the Qwen3-8B shape in fp16 on the host (~30 s), then the side by side of AR,
# DFlash (head off), Domino (adaptive, trace on), Domino tree (topk 4, budget 32) and NGRAM at
# concurrency 1,4,16,64 with greedy equality vs AR; servers in memory waves (AR stays up).
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz
#   .device/jit-cache-h200.tar.xz (benchmarks/results moved aside)
SHA="$1"; TOTAL="${2:-580}"
source "$(dirname "$0")/lib.sh"
call_begin 14F "$SHA"
gpu_gb
inflate_8b
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --pair /tmp/p8b --dtype float16 --systems ar dflash domino domino_tree ngram --tree-topk 4 --tree-budget 32 --levels 1,16,64,4 --max-new-tokens 32 --eq-max-new-tokens 64 --max-total-tokens 16384 --gpu-mem-gb $GB --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt
find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 5 $R/inflate.txt; tail -n 60 $R/sbs.txt
