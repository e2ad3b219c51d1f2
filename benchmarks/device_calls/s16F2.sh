#!/usr/bin/env bash
# session 16, GPU call F2 (#13 item 5 and #15 item 5 at 8B cost): the inflated pair (kept in
# /tmp/p8b by F1 on the same warm machine, else built again, ~30 s); AR, NGRAM, Domino adaptive
# and Domino tree 2x16 and 4x32 at concurrency 1,4,16,64, greedy equality vs AR on 64 prompts.
# Carry: as s16F1.sh
SHA="$1"; TOTAL="${2:-575}"
source "$(dirname "$0")/lib.sh"
call_begin 16F2 "$SHA"
gpu_gb
inflate_8b
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --pair /tmp/p8b --dtype float16 --systems ar ngram domino domino_tree --tree-configs 2x16,4x32 --levels 1,4,16,64 --max-new-tokens 32 --eq-max-new-tokens 64 --max-total-tokens 16384 --gpu-mem-gb $GB --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt
find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 3 $R/inflate.txt; tail -n 45 $R/sbs.txt
