#!/usr/bin/env bash
# session 16, GPU call F (#14 item 3, #13 item 5, #15 item 5 at 8B cost): the tiny pair inflated
# to Qwen3-8B shape (fp16, ~30 s); AR, DFlash (head off), Domino adaptive (trace on) in wave 0,
# Domino fixed-16 and Domino tree 4x32 in wave 1, concurrency 1,2,4,8,16,32,64, greedy equality
# vs AR on 64 prompts. (s16F1 ran the same with the ops tests beside it: their Triton compiles
# slowed the server starts to 113-137 s and the budget cut wave 0 after c=1.)
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz
#   .device/jit-cache-h200.tar.xz (benchmarks/results moved aside)
SHA="$1"; TOTAL="${2:-575}"
source "$(dirname "$0")/lib.sh"
call_begin 16F "$SHA"
gpu_gb
inflate_8b
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --pair /tmp/p8b --dtype float16 --systems ar dflash domino domino_fixed domino_tree --tree-topk 4 --tree-budget 32 --levels 1,16,64,4,32,8,2 --max-new-tokens 32 --eq-max-new-tokens 64 --max-total-tokens 16384 --gpu-mem-gb $GB --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt

find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 5 $R/inflate.txt; tail -n 45 $R/sbs.txt
