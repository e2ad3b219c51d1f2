"""Faster greedy variants of the fused Domino head (``domino_head_triton(..., variant=...)``).

Same contract and the same tokens as the default path (``domino_head.py``; spec
``core.rollout.domino_rollout_ref``); greedy with a head and an E_ih table only (anything else
runs the default path). The idea: the GRU's recurrent term ``gh_i = W_hh s_i`` needs only
``s_i``, like the rank projection ``W1_s s_i``, so both are one wide mat-vec over the stacked rows
``[W1_s ; W_hh]`` ([R + 3G, G], 6.5 MB bf16) split over ``R + 3G / BLOCK_N`` programs ("pre"
phase); what is left of the GRU once the token ``d_i`` is known is elementwise:
``s_{i+1} = GRU(E_ih[d_i], gh_i, s_i)``.

Variants (per step i; K-1 = 15 steps per block):

* ``"wide"``: pre(i) [act_i, gh_i from s_i] -> corr(i) [partials] -> fin(i) [token d_i from the
  partials, s_{i+1} elementwise, G split over programs]: 3 launches per step, all wide.
* ``"fused"``: pre(i) first rebuilds ``s_i`` from (d_{i-1}, gh_{i-1}, s_{i-1}) chunk by chunk
  inside its K loop (every program redundantly: 28 KB of L2 reads per program per row) -> corr(i):
  2 launches per step. Good at small batch (the redundant reads grow with the batch).
* ``"fused_pdl"``: the fused launches with programmatic dependent launch
  (sm_90+): each kernel lets its successor launch at once and waits on its predecessor inside
  (``griddepcontrol``); at rows <= 2 the pre phase first loads its rows of [W1_s ; W_hh] in one
  tile, and issues its token-independent GRU loads before reducing the argmax partials, in one
  load. (Loading the correction's first W2 tile before the wait was measured too: no gain, a
  register spill; removed.)

H200, Qwen3-8B head, graph replay (``benchmarks/results/kernels_notes.md``): fused_pdl 0.448 ms
per block at B=1 (fused 0.508), wide 0.666 / 1.366 ms at B=16 / 64 (wide_pdl 0.706 / 1.471:
slower there: that variant was never chosen and is gone), default 0.730 / 0.799 / 1.479. A single persistent launch with grid barriers
between the phases was measured too and removed: slower at every batch size (barriers cost more
than launches inside a CUDA graph).

Exactness: the pre phase at rows <= 2 uses fp32 FMA on upcast weights (exact products up to one
fp32 rounding); from 4 rows, the hi/lo bf16 tensor-core split of ``_dot_acc`` (as the default
path). The correction phase is the default's code (hi/lo split against bf16 W2). Token ties go to
the lowest index everywhere (per tile: tie_break_left; across programs: lowest index).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._launch import batch_block, dot_mode, next_pow2
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ._launch import interpreting
from .domino_head import (_act_split, _argmax_partials, _argmax_update, _corr_tile, _dot_acc,
                          _gate_rows, _gru_cell, _sigmoid, domino_head_triton)

HEAD_VARIANTS = ("default", "wide", "fused", "fused_pdl")

FIN_BLOCK_G = 32  # fin phase: G / 32 = 32 programs at G=1024 (elementwise, latency bound)


# ---------------------------------------------------------------------------------------------
# jit helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _pdl_sync(PDL: tl.constexpr):
    """Programmatic dependent launch (sm_90+): let the next launch start now (its programs load
    their weights, then wait here in turn), then wait until the previous launch has finished and
    its writes are visible. Everything a kernel writes, and everything it reads that an earlier
    launch of the head wrote, comes after this call; only weights are read before it."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def _token(from_parts, bonus_ptr, s_bonus, pval_ptr, pidx_ptr, num_parts: tl.constexpr, B,
           PB: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """d for rows 0..BLOCK-1: argmax of the partials (from_parts != 0) or bonus[b * s_bonus]
    (the server's bonus is the block ids' first column: stride B)."""
    rb = tl.arange(0, BLOCK)
    bon = tl.load(bonus_ptr + rb * s_bonus, mask=rb < B, other=0).to(tl.int32)
    tok = bon
    if from_parts != 0:
        tok = _argmax_partials(pval_ptr, pidx_ptr, num_parts, PB, BLOCK, CHUNK)
    return tok


@triton.jit
def _gh_load(rb, bm, g, gm, gh_ptr, sp_ptr, has_state, G: tl.constexpr):
    """The token-independent GRU inputs of state columns g: (W_hh s_prev) r/z/n parts and s_prev
    (zeros without a state)."""
    ms = bm[:, None] & gm[None, :] & (has_state != 0)
    hp = gh_ptr + rb[:, None] * (3 * G) + g[None, :]
    h_r = tl.load(hp, mask=ms, other=0.0, cache_modifier=".cg")
    h_z = tl.load(hp + G, mask=ms, other=0.0, cache_modifier=".cg")
    h_n = tl.load(hp + 2 * G, mask=ms, other=0.0, cache_modifier=".cg")
    s_prev = tl.load(sp_ptr + rb[:, None] * G + g[None, :], mask=ms, other=0.0,
                     cache_modifier=".cg")
    return h_r, h_z, h_n, s_prev


@triton.jit
def _gru_apply(tok, bm, g, gm, gi_ptr, h_r, h_z, h_n, s_prev, G: tl.constexpr):
    """s_new = GRU(E_ih[tok], gh, s_prev) from the loaded gh parts and s_prev (fp32)."""
    i_r, i_z, i_n = _gate_rows(gi_ptr, tok, bm[:, None] & gm[None, :], g, G)
    return _gru_cell(i_r, i_z, i_n, h_r, h_z, h_n, s_prev)


@triton.jit
def _gru_chunk(tok, rb, bm, g, gm, gi_ptr, gh_ptr, sp_ptr, has_state, G: tl.constexpr):
    """s_new[rb, g] = GRU(E_ih[tok], gh, s_prev) for one chunk of state columns g (fp32)."""
    h_r, h_z, h_n, s_prev = _gh_load(rb, bm, g, gm, gh_ptr, sp_ptr, has_state, G)
    return _gru_apply(tok, bm, g, gm, gi_ptr, h_r, h_z, h_n, s_prev, G)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _pre_kernel(step, B, tok_in_ptr, s_tok_in, from_parts, pval_ptr, pidx_ptr,
                num_parts: tl.constexpr, tok_out_ptr,
                s_tok_out, gi_ptr, gh_in_ptr, s_in_ptr, has_state, s_out_ptr, w1s_ptr, whh_ptr,
                ah_ptr, s_ah_b, act_ptr, gh_out_ptr, R: tl.constexpr, G: tl.constexpr,
                FUSE: tl.constexpr, USE_DOT: tl.constexpr, MODE: tl.constexpr,
                PB: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PDL: tl.constexpr = False,
                PREFETCH: tl.constexpr = False):
    """Output rows [t*BLOCK_N, +BLOCK_N) of [W1_s ; W_hh] @ s_i for all batch rows:
    act_i = SiLU(a_h[:, step] + W1_s s_i) (rows < R), gh_i = W_hh s_i (rows >= R).

    FUSE: s_i = GRU(E_ih[d_{i-1}], gh_in, s_in) is rebuilt here per K chunk (d_{i-1} from the
    partials or bonus); program 0 writes s_i to s_out and d_{i-1} to tok_out (when from partials).
    Not FUSE: s_i is read from s_in.
    PREFETCH (BLOCK_K == G): the program's weight rows are loaded in one tile before the
    dependent-launch wait (PDL), so that their read overlaps the previous launch."""
    t = tl.program_id(0)
    rb = tl.arange(0, BLOCK_B)
    bm = rb < B
    rn = t * BLOCK_N + tl.arange(0, BLOCK_N)
    is_a = rn < R
    is_h = (rn >= R) & (rn < R + 3 * G)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    if PREFETCH:
        gm = rk < G
        w = tl.load(w1s_ptr + rn[:, None].to(tl.int64) * G + rk[None, :],
                    mask=is_a[:, None] & gm[None, :], other=0.0)
        w += tl.load(whh_ptr + (rn - R)[:, None].to(tl.int64) * G + rk[None, :],
                     mask=is_h[:, None] & gm[None, :], other=0.0)
        _pdl_sync(PDL)
        s = _pre_state(t, rb, bm, rk, gm, B, tok_in_ptr, s_tok_in, from_parts, pval_ptr, pidx_ptr,
                       num_parts, tok_out_ptr, s_tok_out, gi_ptr, gh_in_ptr, s_in_ptr,
                       has_state, s_out_ptr, G, FUSE, PB, BLOCK_B, CHUNK)
        acc = _pre_acc(acc, s, w, USE_DOT, MODE)
    else:
        _pdl_sync(PDL)
        if FUSE:
            tok = _token(from_parts, tok_in_ptr, s_tok_in, pval_ptr, pidx_ptr, num_parts, B, PB,
                         BLOCK_B, CHUNK)
            if (t == 0) & (from_parts != 0):
                tl.store(tok_out_ptr + rb * s_tok_out, tok.to(tl.int64), mask=bm)
        for k0 in range(0, G, BLOCK_K):
            g = k0 + rk
            gm = g < G
            if FUSE:
                s = _gru_chunk(tok, rb, bm, g, gm, gi_ptr, gh_in_ptr, s_in_ptr, has_state, G)
                s = tl.where(bm[:, None] & gm[None, :], s, 0.0)
                if t == 0:
                    tl.store(s_out_ptr + rb[:, None] * G + g[None, :], s,
                             mask=bm[:, None] & gm[None, :])
            else:
                s = tl.load(s_in_ptr + rb[:, None] * G + g[None, :],
                            mask=bm[:, None] & gm[None, :], other=0.0, cache_modifier=".cg")
            w = tl.load(w1s_ptr + rn[:, None].to(tl.int64) * G + g[None, :],
                        mask=is_a[:, None] & gm[None, :], other=0.0)
            w += tl.load(whh_ptr + (rn - R)[:, None].to(tl.int64) * G + g[None, :],
                         mask=is_h[:, None] & gm[None, :], other=0.0)
            acc = _pre_acc(acc, s, w, USE_DOT, MODE)
    m_a = bm[:, None] & is_a[None, :]
    a = acc + tl.load(ah_ptr + rb[:, None] * s_ah_b + step * R + rn[None, :], mask=m_a, other=0.0,
                      cache_modifier=".cg")
    tl.store(act_ptr + rb[:, None] * R + rn[None, :], a * _sigmoid(a), mask=m_a)
    tl.store(gh_out_ptr + rb[:, None] * (3 * G) + (rn - R)[None, :], acc,
             mask=bm[:, None] & is_h[None, :])


@triton.jit
def _pre_acc(acc, s, w, USE_DOT: tl.constexpr, MODE: tl.constexpr):
    """acc [B, N] += s [B, K] @ w [N, K]^T (tensor cores, or fp32 FMA at tiny B)."""
    if USE_DOT:
        acc = _dot_acc(acc, s, tl.trans(w), MODE)
    else:
        acc += tl.sum(s[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    return acc


@triton.jit
def _pre_state(t, rb, bm, g, gm, B, tok_in_ptr, s_tok_in, from_parts, pval_ptr, pidx_ptr,
               num_parts: tl.constexpr, tok_out_ptr, s_tok_out, gi_ptr, gh_in_ptr, s_in_ptr,
               has_state, s_out_ptr, G: tl.constexpr, FUSE: tl.constexpr, PB: tl.constexpr,
               BLOCK_B: tl.constexpr, CHUNK: tl.constexpr):
    """s_i over the state columns g (all of them in the PREFETCH path): rebuilt (FUSE; program 0
    also writes d_{i-1} and s_i) or read from s_in."""
    if FUSE:
        # the token-independent loads first, so that they overlap the partials' reduction
        h_r, h_z, h_n, s_prev = _gh_load(rb, bm, g, gm, gh_in_ptr, s_in_ptr, has_state, G)
        tok = _token(from_parts, tok_in_ptr, s_tok_in, pval_ptr, pidx_ptr, num_parts, B, PB,
                     BLOCK_B, CHUNK)
        if (t == 0) & (from_parts != 0):
            tl.store(tok_out_ptr + rb * s_tok_out, tok.to(tl.int64), mask=bm)
        s = _gru_apply(tok, bm, g, gm, gi_ptr, h_r, h_z, h_n, s_prev, G)
        s = tl.where(bm[:, None] & gm[None, :], s, 0.0)
        if t == 0:
            tl.store(s_out_ptr + rb[:, None] * G + g[None, :], s, mask=bm[:, None] & gm[None, :])
    else:
        s = tl.load(s_in_ptr + rb[:, None] * G + g[None, :], mask=bm[:, None] & gm[None, :],
                    other=0.0, cache_modifier=".cg")
    return s


@triton.jit
def _fin_kernel(B, tok_in_ptr, s_tok_in, from_parts, pval_ptr, pidx_ptr, num_parts: tl.constexpr,
                tok_out_ptr, s_tok_out,
                gi_ptr, gh_ptr, s_in_ptr, has_state, s_out_ptr, G: tl.constexpr,
                PB: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_G: tl.constexpr,
                CHUNK: tl.constexpr, PDL: tl.constexpr = False):
    """s_out[:, slice t] = GRU(E_ih[d], gh, s_in); program 0 writes d to tok_out (from partials)."""
    _pdl_sync(PDL)
    t = tl.program_id(0)
    rb = tl.arange(0, BLOCK_B)
    bm = rb < B
    tok = _token(from_parts, tok_in_ptr, s_tok_in, pval_ptr, pidx_ptr, num_parts, B, PB,
                 BLOCK_B, CHUNK)
    if (t == 0) & (from_parts != 0):
        tl.store(tok_out_ptr + rb * s_tok_out, tok.to(tl.int64), mask=bm)
    g = t * BLOCK_G + tl.arange(0, BLOCK_G)
    gm = g < G
    s = _gru_chunk(tok, rb, bm, g, gm, gi_ptr, gh_ptr, s_in_ptr, has_state, G)
    tl.store(s_out_ptr + rb[:, None] * G + g[None, :], s, mask=bm[:, None] & gm[None, :])


@triton.jit
def _corr2_kernel(base_ptr, s_base, act_ptr, w2_ptr, pval_ptr, pidx_ptr, B, V: tl.constexpr,
                  R: tl.constexpr, ITERS: tl.constexpr, USE_CORR: tl.constexpr,
                  MODE: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_B: tl.constexpr,
                  BLOCK_R: tl.constexpr, PDL: tl.constexpr = False):
    """The default ``_corr_kernel`` body (greedy, no logits): partials [nprog, BLOCK_B] of
    argmax_v (base + act @ W2^T) over tiles pid, pid + nprog, ..."""
    _pdl_sync(PDL)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    rb = tl.arange(0, BLOCK_B)
    rr = tl.arange(0, BLOCK_R)
    rv = tl.arange(0, BLOCK_V)
    bm = rb < B
    act = tl.load(act_ptr + rb[:, None] * R + rr[None, :], mask=bm[:, None] & (rr < R)[None, :],
                  other=0.0, cache_modifier=".cg")
    act_hi, act_lo = _act_split(act, MODE)
    best_v = tl.full([BLOCK_B], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK_B], tl.int32)
    for it in range(ITERS):
        tt = pid + it * nprog
        logits, m2 = _corr_tile(base_ptr, s_base, rb, w2_ptr, tt, bm, rr, rv, act, act_hi,
                                act_lo, V, R, USE_CORR, MODE, BLOCK_V)
        best_v, best_i = _argmax_update(logits, m2, tt, best_v, best_i, BLOCK_V)
    tl.store(pval_ptr + pid * BLOCK_B + rb, best_v)
    tl.store(pidx_ptr + pid * BLOCK_B + rb, best_i)


@triton.jit
def _last_token_kernel(pval_ptr, pidx_ptr, num_parts: tl.constexpr, tok_out_ptr, s_tok_out, B,
                       PB: tl.constexpr, CHUNK: tl.constexpr, PDL: tl.constexpr = False):
    _pdl_sync(PDL)
    rb = tl.arange(0, PB)
    tok = _argmax_partials(pval_ptr, pidx_ptr, num_parts, PB, PB, CHUNK)
    tl.store(tok_out_ptr + rb * s_tok_out, tok.to(tl.int64), mask=rb < B)


# ---------------------------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------------------------


def pre_settings(rows: int, rank: int, gru: int, *, prefetch: bool = False) -> dict:
    """Pre phase tiles: FMA on fp32 at rows <= 2 (a [BLOCK_B, BLOCK_N, BLOCK_K] product of at
    most 8192 values = 64 registers/thread at 4 warps), else tensor-core dots (rows padded to 16).
    BLOCK_N=16: (R + 3G) / 16 = 208 programs at R=256, G=1024 (>= 132 SMs).

    prefetch: one K tile of all G columns (loaded before the PDL wait) with 8 warps, on the FMA
    path only (rows <= 2, G a power of two <= 1024): ptxas for sm_90 fits it in 176 registers
    without spills at rows=1, G=1024, while the tensor-core path at 16 rows spills ~5 KB."""
    if prefetch and can_prefetch_pre(rows, gru):
        bb = next_pow2(rows)
        return dict(USE_DOT=False, BLOCK_B=bb, BLOCK_N=16 // bb, BLOCK_K=gru, num_warps=8,
                    PREFETCH=True)
    if rows <= 2:
        bb = next_pow2(rows)
        bk = min(next_pow2(gru), 8192 // (bb * 16))
        return dict(USE_DOT=False, BLOCK_B=bb, BLOCK_N=16, BLOCK_K=max(16, bk), num_warps=4)
    bb = batch_block(rows)
    return dict(USE_DOT=True, BLOCK_B=bb, BLOCK_N=16, BLOCK_K=128 if bb <= 32 else 64,
                num_warps=4)


def can_prefetch_pre(rows: int, gru: int) -> bool:
    return rows <= 2 and 16 <= gru <= 1024 and gru == next_pow2(gru)


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch: a CUDA device of compute capability 9.0 or newer (the
    kernels still run, without the overlap, anywhere else; the interpreter skips it)."""
    if interpreting() or device.type != "cuda":
        return False
    return _capability_major(device.index if device.index is not None else
                             torch.cuda.current_device()) >= 9


@functools.lru_cache(maxsize=None)
def _capability_major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def domino_head_launch(z, base_logits, bonus, weights, ws, *, pure_prefix_len: int,
                       sampling=None, uniforms=None, logits_out=None, probs_out=None,
                       variant: str = "default"):
    """The fused rollout of one block with launch variant ``variant`` (``ops.domino_head.
    pick_variant`` picks it): "wide" / "fused" / "fused_pdl" for greedy rollouts with
    a head, an E_ih table and no logits output; any other call runs
    ``domino_head.domino_head_triton`` (the "default" launch sequence). Same tokens either way;
    same arguments and return as ``domino_head_triton``."""
    if variant not in HEAD_VARIANTS:
        raise ValueError(f"unknown head variant {variant!r}: expected one of {HEAD_VARIANTS}")
    b = z.shape[0]
    # the wide / fused launches hold every row in one program of the correction kernel: past
    # the rows that fit (``_launch.CORR_MAX_ROWS_X_RANK``) the default sequence, which splits them
    if (variant != "default" and weights is not None and sampling is None and logits_out is None
            and weights.gi_table is not None
            and ws.corr_config(b, z.device)["BLOCK_B"] >= batch_block(b)):
        return head_wide_or_fused(z, base_logits, bonus, weights, ws,
                                  pure_prefix_len=pure_prefix_len,
                                  fuse=variant.startswith("fused"), pdl=variant.endswith("_pdl"))
    return domino_head_triton(z, base_logits, bonus, weights, ws, pure_prefix_len=pure_prefix_len,
                              sampling=sampling, uniforms=uniforms, logits_out=logits_out,
                              probs_out=probs_out)


def head_wide_or_fused(z, base_logits, bonus, weights, ws, *, pure_prefix_len: int, fuse: bool,
                       pdl: bool = False):
    """Variants "wide" (fuse=False) and "fused" (fuse=True); greedy, with a table.

    pdl: the "_pdl" variants: every launch after the first waits on its predecessor inside the
    kernel (griddepcontrol) instead of at launch; the pre phase loads its weight rows before that
    wait (rows <= 2). The prefetching pre phase also runs where PDL itself is unavailable (CPU
    interpreter, pre-Hopper GPUs), so the tests cover it."""
    b, k1, _ = z.shape
    g, r = weights.gru_dim, weights.rank
    if ws.gh.shape[-1] != 3 * g:
        raise ValueError("workspace gh buffer does not match the GRU size")
    dev = z.device
    tokens = ws.tokens[:b]
    pcfg = pre_settings(b, r, g, prefetch=pdl)
    use_pdl = pdl and pdl_supported(z.device)
    # launch options: PDL flag for the kernels (the wait), launch_pdl for the launch attribute
    lp = dict(PDL=True, launch_pdl=True) if use_pdl else {}
    pb = batch_block(b)
    mode_pre = dot_mode(torch.float32, weights.w_hh.dtype)
    n_pre = triton.cdiv(r + 3 * g, pcfg["BLOCK_N"])
    ccfg = ws.corr_config(b, dev)
    nctas = ccfg.pop("num_ctas")
    iters = triton.cdiv(triton.cdiv(base_logits.shape[-1], ccfg["BLOCK_V"]), nctas)
    mode_corr = dot_mode(torch.float32, weights.w2.dtype)
    chunk = max(16, min(512, 4096 // pb))  # partials reduced CHUNK programs at a time
    # the prefetching pre phase reduces all partials of its few rows in one load when they fit
    chunk_pre = (min(next_pow2(nctas), max(16, 4096 // pcfg["BLOCK_B"]))
                 if pcfg.get("PREFETCH") else chunk)
    from .domino_head import launch_rowmat
    launch_rowmat(z, weights.w1_h, ws.a_h[:b].view(b * k1, -1))
    state, gh = ws.state, ws.gh
    sb = bonus.stride(0)  # the server's bonus is a strided view (the block ids' first column)
    table = weights.gi_table
    fin_bg = FIN_BLOCK_G
    if not fuse:
        _fin_kernel[(triton.cdiv(g, fin_bg),)](b, bonus, sb, 0, ws.part_val, ws.part_idx, nctas,
                                               tokens, tokens.stride(0), table, gh[0], state[1], 0,
                                               state[0], g, pb, pb, fin_bg, chunk, num_warps=4,
                                               **lp)
    for i in range(k1):
        cur, prv = i % 2, 1 - i % 2
        if fuse:
            _pre_kernel[(n_pre,)](i, b, bonus, sb, int(i > 0), ws.part_val, ws.part_idx, nctas,
                                  tokens[:, max(i - 1, 0)], tokens.stride(0), table, gh[prv],
                                  state[prv], int(i > 0), state[cur], weights.w1_s, weights.w_hh,
                                  ws.a_h, ws.a_h.stride(0), ws.act, gh[cur], r, g, True,
                                  MODE=mode_pre, PB=pb, CHUNK=chunk_pre, **pcfg, **lp)
        else:
            _pre_kernel[(n_pre,)](i, b, bonus, sb, 0, ws.part_val, ws.part_idx, nctas, tokens,
                                  tokens.stride(0), table, gh[0], state[cur], 1, state[cur],
                                  weights.w1_s, weights.w_hh, ws.a_h, ws.a_h.stride(0), ws.act,
                                  gh[0], r, g, False, MODE=mode_pre, PB=pb, CHUNK=chunk_pre,
                                  **pcfg, **lp)
        base_i = base_logits[:, i]
        _corr2_kernel[(nctas,)](base_i, base_i.stride(0), ws.act, weights.w2, ws.part_val,
                                ws.part_idx, b, base_logits.shape[-1], r, iters,
                                USE_CORR=i >= pure_prefix_len, MODE=mode_corr, **ccfg, **lp)
        if not fuse and i + 1 < k1:
            _fin_kernel[(triton.cdiv(g, fin_bg),)](b, bonus, sb, 1, ws.part_val, ws.part_idx, nctas,
                                                   tokens[:, i], tokens.stride(0), table, gh[0],
                                                   state[cur], 1, state[prv], g, pb, pb, fin_bg,
                                                   chunk, num_warps=4, **lp)
    _last_token_kernel[(1,)](ws.part_val, ws.part_idx, nctas, tokens[:, k1 - 1], tokens.stride(0),
                             b, pb, chunk, num_warps=4, **lp)
    return tokens
