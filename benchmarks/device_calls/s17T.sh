#!/usr/bin/env bash
# session 17, GPU call T (#14 item 3 and #15 item 5 on the tiny pair, the short form of s16T for
# the end of a session's budget): AR, DFlash (head off), Domino adaptive (trace on), Domino
# fixed-16 and Domino tree 2x16 / 4x32 at concurrency 16,64,4,1,32,8,2 (64 tokens per request),
# fp16, greedy equality vs AR. TOTAL as the budget allows (>= 200 s).
# Carry: as s17G.sh
SHA="$1"; TOTAL="${2:-300}"
source "$(dirname "$0")/lib.sh"
call_begin 17T "$SHA"
BUD=$((TOTAL - SECONDS - 20))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --dtype float16 --systems ar dflash domino domino_fixed domino_tree --tree-configs 2x16,4x32 --levels 16,64,4,1,32,8,2 --max-new-tokens 64 --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt
find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 60 $R/sbs.txt
