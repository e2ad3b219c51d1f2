#!/usr/bin/env bash
# session 16, GPU call F1 (#14 item 3 at 8B cost, #13 item 5, the session-15 kernel fixes on a
# GPU): the CUDA-only ops tests (the new dot mode 4 and row blocks against their references) in
# the background while the tiny pair is inflated to Qwen3-8B shape (fp16, ~30 s); then AR,
# DFlash (head off), Domino adaptive (trace on) and Domino fixed-16 at concurrency
# 1,2,4,8,16,32,64, greedy equality vs AR on 64 prompts. (Kept as it ran on 2026-12-07.)
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz
#   .device/jit-cache-h200.tar.xz (benchmarks/results moved aside)
SHA="$1"; TOTAL="${2:-575}"
source "$(dirname "$0")/lib.sh"
call_begin 16F1 "$SHA"
GB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 | awk '{printf "%.1f", $1*1.048576/1000}')
echo "gpu_gb=$GB" >> $R/gpu.txt
( timeout -s TERM 300 python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/ops > $R/pytest_gpu_ops.txt 2>&1; echo "rc=$? ${SECONDS}s" >> $R/pytest_gpu_ops.txt ) &
python3 -m domino_sglang.bench.inflate --src assets/domino-tiny --shape qwen3-8b --out /tmp/p8b --device cuda --dtype float16 --quiet > $R/inflate.txt 2>&1; echo "rc=$? ${SECONDS}s" >> $R/inflate.txt
cp /tmp/p8b/inflate.json $R/ 2>/dev/null
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --pair /tmp/p8b --dtype float16 --systems ar dflash domino domino_fixed --levels 1,2,4,8,16,32,64 --max-new-tokens 32 --eq-max-new-tokens 64 --max-total-tokens 16384 --gpu-mem-gb $GB --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt
wait
find $R -name "*trace*" -size +4M -exec sh -c 'xz -9 "$1"' _ {} \;
call_end
ls -la $OUT; tail -n 5 $R/inflate.txt; tail -n 8 $R/pytest_gpu_ops.txt; tail -n 45 $R/sbs.txt
