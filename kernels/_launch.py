"""Shared launch policy: block sizes, warps and grid sizes for every kernel in this package.

Under ``TRITON_INTERPRET=1`` (CPU CI) each program runs in Python, so grids are kept small there;
on a GPU the persistent grids are sized from the SM count."""

from __future__ import annotations

import functools
import os

import torch


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def batch_block(rows: int) -> int:
    """Rows padded for tl.dot: every dot operand dimension must be >= 16."""
    return max(16, next_pow2(rows))


def dot_mode(x_dtype: torch.dtype, w_dtype: torch.dtype) -> int:
    """How a kernel forms x @ w^T with fp32 accuracy (products exact, fp32 accumulation).

    0: x and w are both bf16 (or both fp16): native tensor-core dot, products are exact in fp32.
    1: x is fp32, w is bf16: x is split into bf16 hi + lo parts, two bf16 dots (16 mantissa bits
       of x, relative error ~2^-17 per product, on tensor cores).
    2: anything else: fp32 dot with input_precision="ieee" (no TF32).
    4: x is fp32, w is fp16: as 1 with fp16 hi + lo parts (22 mantissa bits of x; values below
       fp16's normal range, |x| < 6.1e-5, keep an absolute error under 3e-8). Before it, fp16
       weights ran mode 2: the pre phase's dot path (rows > 2) compiled for sm_90 with 32
       registers and a 2.5 KB stack per thread (tests/ops/test_sm90_compile.py), and in the
       session-15 H100 run (benchmarks/results/session15_20261207) a Qwen3-8B-shape fp16 round
       cost ~59 ms from batch 3-4 on, against 11 ms at batch 1 (not yet re-measured with mode 4).
    3: the interpreter (TRITON_INTERPRET=1): an fp32 broadcast product summed over K with tl.sum.

    Why mode 3. The Triton 3.6 interpreter computes bf16/fp16 tl.dot wrongly (it multiplies the
    raw bits), and its fp32 tl.dot is numpy's matmul, i.e. OpenBLAS sgemm, whose kernel is picked
    per CPU at run time (DYNAMIC_ARCH): the Haswell and Zen kernels (AVX2 machines, or
    OPENBLAS_CORETYPE=Haswell) round an output element differently depending on where its row
    sits in the tile, so two identical W2 rows gave different logits and exact ties broke
    (tests/ops/test_tree_build.py::test_tree_build_planted_ties failed on such CPUs only, with
    the same numpy, torch and triton). tl.sum reduces every output element in the same order, on
    any CPU: a result depends on the row's values, never on its position.
    """
    if interpreting():
        return 3
    if x_dtype == w_dtype and x_dtype in (torch.bfloat16, torch.float16):
        return 0
    if x_dtype == torch.float32 and w_dtype == torch.bfloat16:
        return 1
    if x_dtype == torch.float32 and w_dtype == torch.float16:
        return 4
    return 2


# Rows one program of the correction / GRU kernel holds (more rows: a second grid axis of row
# blocks). The correction kernel's shared memory grows with rows x rank (the activation
# operands): at R=256, 128 rows take 144-176 KB and 256 rows 288-304 KB (sm_90 compiles of
# Triton 3.6, bf16 / fp16 weights; the limit per program is 227 KB), so a Qwen3-8B-shape tree of
# topk 4 at batch 64 (256 frontier rows) could not start before (session 15, H100). The GRU
# kernel takes 130 KB at 256 rows and 258 KB at 512 (topk 8 at batch 64).
CORR_MAX_ROWS_X_RANK = 128 * 256
GRU_MAX_ROWS = 128


def corr_settings(vocab: int, rank: int, rows: int, device: torch.device) -> dict:
    """The full-vocabulary correction kernel: a persistent grid over vocabulary tiles of W2.

    BLOCK_V=64 with 4 warps keeps a [64, R<=256] bf16 tile (32 KB) in registers; the grid is a
    small multiple of the SM count so that every SM streams W2 (the head is bandwidth bound)."""
    block_r = max(16, next_pow2(rank))
    if block_r > 512:
        raise ValueError(f"correction rank R={rank} > 512 is not supported by the fused head")
    # rows per program (the grid's second axis covers the rest)
    block_b = min(batch_block(rows), max(16, CORR_MAX_ROWS_X_RANK // block_r))
    block_v = 64 if block_b <= 32 else 32
    n_tiles = -(-vocab // block_v)
    if interpreting() or device.type != "cuda":
        return dict(BLOCK_V=block_v, BLOCK_B=block_b, BLOCK_R=block_r, num_ctas=min(n_tiles, 3),
                    num_warps=4)
    # H200, Qwen3-8B dims (benchmarks/results/kernels_bench.json sweep): 2 CTAs/SM beat 1 and 4
    # at B=1/16 (0.82 vs 0.91 ms per block); at B=64 one CTA/SM with 8 warps is best (1.56 ms).
    sms = num_sms(device.index or 0)
    # Shared memory (Triton 3.6 static estimate, compiled for sm_90 with MODE=1, R=256, logits
    # written; the limit per program is 227 KB): BLOCK_B=16/BLOCK_V=64: 48 KB; 64/64: 100 KB;
    # 128/32: 144 KB; 128/64: 160 KB; 256/32: 288 KB (does not fit). It is dominated by the
    # act hi/lo operands [BLOCK_B, R] bf16 (2 x 64 KB at 128 rows) and does not depend on
    # num_stages (the tile loop is not software-pipelined). The H200 run that failed at 256 KB
    # (tree B=16, 128 frontier rows) predates BLOCK_V=32 here.
    # (no error raised here: workspaces are sized for max_rows but launched with fewer rows)
    if block_b > 32:  # (B > 64, tree frontiers: BLOCK_V=32 to fit shared memory; not yet timed)
        bv = 64 if block_b <= 64 else 32
        return dict(BLOCK_V=bv, BLOCK_B=block_b, BLOCK_R=block_r,
                    num_ctas=min(-(-vocab // bv), sms), num_warps=8)
    return dict(BLOCK_V=block_v, BLOCK_B=block_b, BLOCK_R=block_r,
                num_ctas=min(n_tiles, 2 * sms), num_warps=4)


def gru_settings(gru_dim: int, rows: int, device: torch.device) -> dict:
    """GRU cell: one program per BLOCK_G slice of the state (all rows), so W_hh is read once."""
    block_b = min(batch_block(rows), GRU_MAX_ROWS)  # rows per program
    block_g = 16
    # the K loop is serial per program (latency bound at small B): few, wide iterations
    return dict(BLOCK_G=block_g, BLOCK_B=block_b, BLOCK_K=128 if block_b <= 32 else 64,
                num_warps=4)


def rowmat_settings(m: int, n: int, k: int) -> dict:
    """Small matmuls out[M, N] = x[M, K] @ w[N, K]^T (projections onto the correction rank)."""
    block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
    if m <= 32:  # per-step s @ W1_s^T: more programs, fewer serial K iterations
        return dict(BLOCK_M=block_m, BLOCK_N=16, BLOCK_K=128, num_warps=4)
    return dict(BLOCK_M=block_m, BLOCK_N=32, BLOCK_K=64, num_warps=4)


def row_settings(vocab: int) -> dict:
    """One program per row looping over the vocabulary (sampling, top-k, verification)."""
    block_v = 1024 if not interpreting() else 256
    return dict(BLOCK_V=min(block_v, max(16, next_pow2(vocab))), num_warps=4)
