#!/usr/bin/env bash
# session 12, GPU call C (#14 item 3 and #15 items 4-5 on the tiny pair): the side by side in
# fp16 with the drafters committed on 2026-12-07 and the adaptive policy of 3104451 (steady
# rounds only, probe runs): AR, DFlash, Domino adaptive, Domino fixed-16, Domino tree (topk 4,
# budget 32, SGLang's flags) at 1-64, greedy equality vs AR first. Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz
#   .device/bundle-extras.tar.xz .device/jit-cache-h200.tar.xz (move benchmarks/results aside:
#   the tree + these is > 64 MiB otherwise; this script then inlines into the run command or
#   carry .device/calls too if room)
SHA="$1"; TOTAL="${2:-580}"; R=/tmp/r12C; rm -rf $R; mkdir -p $R
export DOMINO_COMMIT=$SHA
source benchmarks/gpu_preamble.sh .device/sglang-trim.tar.xz > $R/preamble.txt 2>&1 || { cat $R/preamble.txt; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $R/gpu.txt
( while true; do sleep 20; tar czf $OUT/.c.tgz -C /tmp r12C 2>/dev/null; mv $OUT/.c.tgz $OUT/r12C.tgz; done ) & PACKER=$!
timeout -s TERM $((TOTAL - 20)) python3 benchmarks/side_by_side.py --dtype float16 --systems ar dflash domino domino_fixed domino_tree --tree-topk 4 --tree-budget 32 --levels 1,16,64,4,8,2,32 --time-budget-s $((TOTAL - 35)) --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt
kill $PACKER 2>/dev/null; sleep 1; rm -f $OUT/.c.tgz
find $R -name "*.log" -size +300k -exec sh -c 'tail -c 200000 "$1" > "$1.tail"; rm "$1"' _ {} \;
tar czf $OUT/r12C.tgz -C /tmp r12C
tail -n 45 $R/sbs.txt
