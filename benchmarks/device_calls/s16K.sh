#!/usr/bin/env bash
# session 16, GPU call K (#14: why fixed-16 Domino at 8B fp16 and c=16 makes one round per ~43 ms
# per request against ~19 ms for DFlash): the head kernels at Qwen3-8B shape in fp16 and in bf16, batch 1 / 16 / 64,
# graph replay of the default launch sequence (no sweep, no tree, no reference timing), and the
# head as served (base-logit GEMM + head, PreparedDominoHead.propose) at batch 16 / 64.
# Carry: as s16F1.sh. ~2-3 min (Triton compiles first).
SHA="$1"; TOTAL="${2:-170}"
source "$(dirname "$0")/lib.sh"
call_begin 16K "$SHA"
# fp16 first (the open question) with all but the last 45 s; bf16 (the comparison) after it
timeout -s TERM $((TOTAL - SECONDS - 45)) python3 benchmarks/bench_kernels.py --dtype float16 --batch-sizes 16,64,1 --tree-batch-sizes '' --variants default,wide --no-sweep --skip-ref --serving-batch-sizes 16,64 --commit $SHA --out $R/float16 > $R/bench_float16.txt 2>&1; echo "rc=$? ${SECONDS}s" >> $R/bench_float16.txt
timeout -s TERM $((TOTAL - SECONDS - 5)) python3 benchmarks/bench_kernels.py --dtype bfloat16 --batch-sizes 16,64,1 --tree-batch-sizes '' --variants default,wide --no-sweep --skip-ref --serving-batch-sizes 16 --commit $SHA --out $R/bfloat16 > $R/bench_bfloat16.txt 2>&1; echo "rc=$? ${SECONDS}s" >> $R/bench_bfloat16.txt
call_end
ls -la $OUT; tail -n 30 $R/bench_float16.txt; tail -n 12 $R/bench_bfloat16.txt
