#!/usr/bin/env bash
# session 17, GPU call F (#13 item 5 and #15 item 5 at 8B cost): the inflated pair (kept in
# /tmp/p8b from s17G on the same warm machine, else built again, ~45 s); AR, DFlash (head off),
# NGRAM, Domino adaptive and Domino tree 4x32, greedy equality vs AR on 64 prompts. On a GPU of
# > 120 GB (H200: the five 8B servers in one wave) at concurrency 16,64,4,1,32,8,2, else (an H100:
# two waves, and wave 0 would leave wave 1 no time) at 16,64,4,1; cheap levels first. 575 s.
# Carry: as s17G.sh
SHA="$1"; TOTAL="${2:-575}"
source "$(dirname "$0")/lib.sh"
call_begin 17F "$SHA"
gpu_gb
inflate_8b
LEVELS=16,64,4,1; awk -v g=$GB 'BEGIN{exit !(g > 120)}' && LEVELS=16,64,4,1,32,8,2
echo "levels=$LEVELS" >> $R/gpu.txt
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --pair /tmp/p8b --dtype float16 --systems ar dflash ngram domino domino_tree --tree-configs 4x32 --levels $LEVELS --max-new-tokens 32 --eq-max-new-tokens 64 --prefill-probe 32 --max-total-tokens 16384 --gpu-mem-gb $GB --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt
find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 3 $R/inflate.txt; tail -n 45 $R/sbs.txt
