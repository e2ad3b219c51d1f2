"""Draft-tree construction from the Domino head, and the tree's attention layout for SGLang.

Contracts: ``domino_sglang.ops.tree_build.tree_build_ref`` (= ``core.tree.build_tree_ref``) and
``tree_layout_ref`` (SGLang 0.5.17 FULL-mask layout).

The tree shape per depth is static (depth d >= 1 holds ``min(topk, N - 1 - (d-1) * topk)``
nodes, node ids in depth order), so building is a fixed launch sequence per depth, with the
frontier rows laid out ``row = request * F + f``. Per depth, 5 launches (no rowmat at
pure-prefix depths; neither rowmat nor GRU without a head), no host synchronization, no
allocation (every buffer lives in :class:`TreeBuildWorkspace`):

1. ``act = SiLU(a_h[:, i] + s_row @ W1_s^T)`` (``domino_head.launch_rowmat``);
2. the full-vocabulary fp32 logits of every frontier row (``domino_head.launch_corr``, W2 read
   once for all rows), written to the workspace;
3. ``_chunk_topk_kernel``, grid (rows, C): stage 1 of a split-vocabulary top-k. Each program
   holds one CHUNK-wide slice of a logits row in registers (one read) and writes its max
   ``m_c``, its normalizer ``s_c = sum exp(x - m_c)`` and its TOPK + 1 largest logits (ties:
   lower index);
4. ``_merge_select_kernel``, one program per request: stage 2 for the request's F rows
   (``m = max_c m_c``, ``log Z = log sum_c s_c exp(m_c - m)``, log-softmax ``(x - m) - log Z``
   of the C * (TOPK + 1) candidates, the TOPK best by value desc, lowest index), then the
   selection: cumulative scores (fp64, like the reference's Python floats) of the F * TOPK
   candidates, the best ``take`` (ties: earlier parent, better rank) become the depth's nodes.
   At the first depth it also writes the root (bonus token, parent -1, depth 0);
5. the GRU of each new node from its parent's state (``_gru_kernel`` with a source-row map).

Exactness of the split top-k. The ranking key is the fp32 log-softmax value
``lp = (x - m) - log Z``, ties to the lower index (the key of a one-program scan over the row).
``lp`` is monotone in the logit x but not injective (logits a few ulps apart can round to the
same lp), so a chunk's best logits need not be its best keys. The merge checks, per chunk, the
(TOPK+1)-th candidate c: an entry the chunk did not emit can only belong to the top TOPK if
c's key is not below the TOPK-th selected key, or if the fp32 value just below x_c rounds to an
lp >= that threshold. A row where some chunk fails the check (exact or rounding ties at the
threshold inside one chunk beyond its TOPK-th entry: rare for real logits) is rescanned over
the whole row in the same program (the one-program scan, behind a device-side branch), so the
result equals the one-program scan's for every input. The normalizer is summed per chunk and
rescaled, so lp can differ from a one-pass sum (and from torch) in the last fp32 bit; as with
any kernel, the reference's token ids are matched except where fp32 rounding decides a tie.

Cost at the Qwen3-8B head shape (V=151936, CHUNK=4096: C=38 chunks): stage 1 reads each fp32
logits row once (608 KB) with 38 programs per row and writes 48 bytes per (row, chunk) at TOPK 4;
stage 2 reads those ~1.8 KB per row. The one-program-per-row top-k it replaces read each row
2 + TOPK times in a serial loop on one SM (~900 dependent 4 KB loads per row at TOPK 4).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import interpreting, next_pow2, row_settings
from .domino_head import DominoHeadWorkspace, launch_corr, launch_gru, launch_rowmat

_BIG = tl.constexpr(2 ** 30)


def topk_chunk(vocab: int) -> int:
    """Vocabulary chunk of the split top-k: one chunk per stage-1 program, held in registers
    (4096 fp32 = 16 KB, 16 per thread at 8 warps; sm_90 ptxas: 64-87 registers at TOPK 1-8,
    no spill). Small under the interpreter, so that the CPU tests cover many chunks."""
    return min(32 if interpreting() else 4096, max(16, next_pow2(vocab)))


# ---------------------------------------------------------------------------------------------
# split-vocabulary top-k of the log-softmax
# ---------------------------------------------------------------------------------------------


@triton.jit
def _chunk_topk_kernel(lg_ptr, s_lg, cm_ptr, cs_ptr, cv_ptr, ci_ptr, V: tl.constexpr,
                       C: tl.constexpr, KC: tl.constexpr, CHUNK: tl.constexpr):
    """Stage 1, program (row, c): vocabulary entries [c*CHUNK, (c+1)*CHUNK) of a logits row ->
    cm/cs [row*C + c] = chunk max, sum exp(x - max); cv/ci [(row*C + c)*KC + k] = the KC
    largest logits (ties: lower index; missing entries: -inf / 2^30)."""
    row = tl.program_id(0)
    c = tl.program_id(1)
    idx = c * CHUNK + tl.arange(0, CHUNK)
    alive = idx < V
    x = tl.load(lg_ptr + row.to(tl.int64) * s_lg + idx, mask=alive,
                other=float("-inf")).to(tl.float32)
    m = tl.max(x)
    s = tl.sum(tl.where(alive & (x > float("-inf")), tl.exp(x - m), 0.0))
    out = row * C + c
    tl.store(cm_ptr + out, m)
    tl.store(cs_ptr + out, s)
    for k in tl.static_range(KC):
        t = tl.max(tl.where(alive, x, float("-inf")))
        i = tl.min(tl.where(alive & (x == t), idx, _BIG))
        tl.store(cv_ptr + out * KC + k, t)
        tl.store(ci_ptr + out * KC + k, i)
        alive = alive & (idx != i)


@triton.jit
def _next_below(x):
    """The largest fp32 value below x (finite x; -0.0 and 0.0 -> the negative subnormal)."""
    b = x.to(tl.int32, bitcast=True)
    b = tl.where(x > 0, b - 1, tl.where(x == 0, -2147483647, b + 1))
    return b.to(tl.float32, bitcast=True)


@triton.jit
def _scan_topk(ptr, m, ld, V: tl.constexpr, TOPK: tl.constexpr, BLOCK_K: tl.constexpr,
               BLOCK_V: tl.constexpr):
    """The one-program top-k of one logits row (the fallback of the merge): values / indices
    [BLOCK_K] of the TOPK largest (x - m) - ld, ties to the lower index, one pass per rank."""
    rv = tl.arange(0, BLOCK_V)
    rk = tl.arange(0, BLOCK_K)
    vals = tl.full([BLOCK_K], float("-inf"), tl.float32)
    idxs = tl.full([BLOCK_K], _BIG, tl.int32)
    prev_v = tl.full([], float("inf"), tl.float32)
    prev_i = tl.full([], -1, tl.int32)
    for k in tl.static_range(TOPK):
        best_v = tl.full([], float("-inf"), tl.float32)
        best_i = tl.full([], _BIG, tl.int32)
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + rv
            x = tl.load(ptr + idx, mask=idx < V, other=float("-inf")).to(tl.float32)
            lp = (x - m) - ld
            ok = (idx < V) & ((lp < prev_v) | ((lp == prev_v) & (idx > prev_i)))
            lp = tl.where(ok, lp, float("-inf"))
            tmax = tl.max(lp)
            targ = tl.min(tl.where(ok & (lp == tmax), idx, _BIG))
            upd = (tmax > best_v) | ((tmax == best_v) & (targ < best_i))
            best_i = tl.where(upd, targ, best_i)
            best_v = tl.where(upd, tmax, best_v)
        vals = tl.where(rk == k, best_v, vals)
        idxs = tl.where(rk == k, best_i, idxs)
        prev_v = best_v
        prev_i = best_i
    return vals, idxs


@triton.jit
def _merge_topk(cm_ptr, cs_ptr, cv_ptr, ci_ptr, lg_ptr, s_lg, row0, n_rows, V: tl.constexpr,
                C: tl.constexpr, TOPK: tl.constexpr, KC: tl.constexpr, BLOCK_F: tl.constexpr,
                BLOCK_K: tl.constexpr, BLOCK_CC: tl.constexpr, BLOCK_Q: tl.constexpr,
                BLOCK_V: tl.constexpr):
    """Stage 2 for rows row0 .. row0 + n_rows - 1 (n_rows <= BLOCK_F): log-softmax values
    [BLOCK_F, BLOCK_K] fp32 and vocabulary indices (int32) of each row's TOPK best (value desc,
    lowest index), from the stage-1 chunk statistics; rows that fail the exactness check (module
    docstring) are rescanned from the logits rows."""
    rf = tl.arange(0, BLOCK_F)
    fm = rf < n_rows
    row = row0 + rf
    rc = tl.arange(0, BLOCK_CC)
    cmask = fm[:, None] & (rc < C)[None, :]
    chunk = row[:, None] * C + rc[None, :]
    m_c = tl.load(cm_ptr + chunk, mask=cmask, other=float("-inf"))
    s_c = tl.load(cs_ptr + chunk, mask=cmask, other=0.0)
    m = tl.where(fm, tl.max(m_c, axis=1), 0.0)
    denom = tl.sum(tl.where(cmask & (m_c > float("-inf")), s_c * tl.exp(m_c - m[:, None]), 0.0),
                   axis=1)
    ld = tl.log(tl.where(fm, denom, 1.0))
    rq = tl.arange(0, BLOCK_Q)
    qmask = fm[:, None] & (rq < C * KC)[None, :]
    x = tl.load(cv_ptr + row[:, None] * (C * KC) + rq[None, :], mask=qmask, other=float("-inf"))
    ix = tl.load(ci_ptr + row[:, None] * (C * KC) + rq[None, :], mask=qmask, other=_BIG)
    alive = qmask & (ix < _BIG)
    lp = tl.where(alive, (x - m[:, None]) - ld[:, None], float("-inf"))
    rk = tl.arange(0, BLOCK_K)
    vals = tl.full([BLOCK_F, BLOCK_K], float("-inf"), tl.float32)
    idxs = tl.full([BLOCK_F, BLOCK_K], _BIG, tl.int32)
    thr_v = tl.full([BLOCK_F], float("-inf"), tl.float32)
    thr_i = tl.full([BLOCK_F], _BIG, tl.int32)
    for k in tl.static_range(TOPK):
        thr_v = tl.max(tl.where(alive, lp, float("-inf")), axis=1)
        thr_i = tl.min(tl.where(alive & (lp == thr_v[:, None]), ix, _BIG), axis=1)
        vals = tl.where((rk == k)[None, :], thr_v[:, None], vals)
        idxs = tl.where((rk == k)[None, :], thr_i[:, None], idxs)
        alive = alive & (ix != thr_i[:, None])
    # the (TOPK+1)-th candidate of every chunk vs the TOPK-th selected key (thr_v, thr_i)
    last = chunk * KC + (KC - 1)
    x_l = tl.load(cv_ptr + last, mask=cmask, other=float("-inf"))
    i_l = tl.load(ci_ptr + last, mask=cmask, other=_BIG)
    lp_l = (x_l - m[:, None]) - ld[:, None]
    finite = x_l > float("-inf")
    lp_below = tl.where(finite, (_next_below(tl.where(finite, x_l, 0.0)) - m[:, None])
                        - ld[:, None], float("-inf"))
    unsafe = cmask & (i_l < _BIG) & (
        (lp_l > thr_v[:, None]) | ((lp_l == thr_v[:, None]) & (i_l <= thr_i[:, None]))
        | (lp_below >= thr_v[:, None]))
    need = tl.max(unsafe.to(tl.int32), axis=1)
    for f in tl.static_range(BLOCK_F):
        if tl.sum(tl.where(rf == f, need, 0)) > 0:
            m_f = tl.sum(tl.where(rf == f, m, 0.0))
            ld_f = tl.sum(tl.where(rf == f, ld, 0.0))
            v_f, i_f = _scan_topk(lg_ptr + (row0 + f).to(tl.int64) * s_lg, m_f, ld_f, V, TOPK,
                                  BLOCK_K, BLOCK_V)
            vals = tl.where((rf == f)[:, None], v_f[None, :], vals)
            idxs = tl.where((rf == f)[:, None], i_f[None, :], idxs)
    return vals, idxs


@triton.jit
def _merge_topk_kernel(cm_ptr, cs_ptr, cv_ptr, ci_ptr, lg_ptr, s_lg, val_ptr, idx_ptr, rows,
                       V: tl.constexpr, C: tl.constexpr, TOPK: tl.constexpr, KC: tl.constexpr,
                       BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_CC: tl.constexpr,
                       BLOCK_Q: tl.constexpr, BLOCK_V: tl.constexpr):
    """Stage 2 alone (``row_topk_triton``): val/idx [row, TOPK] for BLOCK_F rows per program."""
    row0 = tl.program_id(0) * BLOCK_F
    n_rows = tl.minimum(rows - row0, BLOCK_F)
    vals, idxs = _merge_topk(cm_ptr, cs_ptr, cv_ptr, ci_ptr, lg_ptr, s_lg, row0, n_rows, V, C,
                             TOPK, KC, BLOCK_F, BLOCK_K, BLOCK_CC, BLOCK_Q, BLOCK_V)
    rf = tl.arange(0, BLOCK_F)
    rk = tl.arange(0, BLOCK_K)
    out = (row0 + rf)[:, None] * TOPK + rk[None, :]
    om = (rf < n_rows)[:, None] & (rk < TOPK)[None, :]
    tl.store(val_ptr + out, vals, mask=om)
    tl.store(idx_ptr + out, idxs.to(tl.int64), mask=om)


# ---------------------------------------------------------------------------------------------
# tree selection and layout
# ---------------------------------------------------------------------------------------------


@triton.jit
def _merge_select_kernel(cm_ptr, cs_ptr, cv_ptr, ci_ptr, lg_ptr, s_lg, score_ptr, bonus_ptr,
                         s_bonus, tok_ptr, par_ptr, dep_ptr, new_score_ptr, new_src_ptr,
                         new_tok_ptr,
                         n_front, take, node_off, prev_off, depth, V: tl.constexpr,
                         C: tl.constexpr, N: tl.constexpr, TOPK: tl.constexpr, KC: tl.constexpr,
                         FIRST: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr,
                         BLOCK_CC: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_V: tl.constexpr):
    """Per request b: the TOPK best tokens of each of its n_front rows (stage 2), then the
    `take` best of the n_front * TOPK candidates by cumulative log-prob (ties: earlier parent,
    then better rank) become nodes node_off + j. FIRST: the prior scores are 0 and the root
    (node 0: bonus token, parent -1, depth 0) is written too."""
    b = tl.program_id(0)
    row0 = b * n_front
    vals, idxs = _merge_topk(cm_ptr, cs_ptr, cv_ptr, ci_ptr, lg_ptr, s_lg, row0, n_front, V, C,
                             TOPK, KC, BLOCK_F, BLOCK_K, BLOCK_CC, BLOCK_Q, BLOCK_V)
    rf = tl.arange(0, BLOCK_F)
    rk = tl.arange(0, BLOCK_K)
    cand = (rf < n_front)[:, None] & (rk < TOPK)[None, :]
    flat = rf[:, None] * TOPK + rk[None, :]  # candidate order: parent, then rank
    if FIRST:
        prev = tl.zeros([BLOCK_F], tl.float64)
        tl.store(tok_ptr + b * N, tl.load(bonus_ptr + b * s_bonus).to(tl.int64))
        tl.store(par_ptr + b * N, tl.full([], -1, tl.int64))
        tl.store(dep_ptr + b * N, tl.zeros([], tl.int64))
    else:
        prev = tl.load(score_ptr + row0 + rf, mask=rf < n_front, other=0.0)
    sc = tl.where(cand, prev[:, None] + vals.to(tl.float64), float("-inf"))
    valid = cand
    for j in tl.static_range(TOPK):
        best = tl.max(tl.max(sc, axis=1), axis=0)
        pick = tl.min(tl.min(tl.where(valid & (sc == best), flat, _BIG), axis=1), axis=0)
        hit = cand & (flat == pick)
        on = j < take
        tok = tl.sum(tl.sum(tl.where(hit, idxs, 0), axis=1), axis=0).to(tl.int64)
        node = node_off + j
        tl.store(tok_ptr + b * N + node, tok, mask=on)
        tl.store(par_ptr + b * N + node, (prev_off + pick // TOPK).to(tl.int64), mask=on)
        tl.store(dep_ptr + b * N + node, depth + tl.zeros([], tl.int64), mask=on)
        tl.store(new_score_ptr + b * take + j, best, mask=on)
        tl.store(new_src_ptr + b * take + j, (row0 + pick // TOPK).to(tl.int64), mask=on)
        tl.store(new_tok_ptr + b * take + j, tok, mask=on)
        sc = tl.where(hit, float("-inf"), sc)
        valid = valid & (flat != pick)


@triton.jit
def _tree_layout_kernel(par_ptr, seq_lens_ptr, mask_indptr_ptr, mask_ptr, pos_ptr, retr_ptr,
                        next_tok_ptr, next_sib_ptr, N: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_S: tl.constexpr):
    """Node (b, i): its FULL mask row [seq_len + N] (prefix all True, tree part = ancestors and
    itself), position seq_len + depth, retrieve index b*N+i, first child, next sibling."""
    b = tl.program_id(0)
    i = tl.program_id(1)
    rn = tl.arange(0, BLOCK_N)
    nm = rn < N
    parents = tl.load(par_ptr + b * N + rn, mask=nm, other=-2)
    anc = rn < 0
    depth = -1
    j = i + 0
    for _ in range(N):
        alive = j >= 0
        anc = anc | ((rn == j) & alive)
        depth += alive.to(tl.int32)
        j = tl.where(alive, tl.load(par_ptr + b * N + tl.maximum(j, 0)).to(tl.int32), -1)
    seq_len = tl.load(seq_lens_ptr + b)
    row = mask_ptr + tl.load(mask_indptr_ptr + b) + i * (seq_len + N)
    rs = tl.arange(0, BLOCK_S)
    s0 = seq_len * 0
    while s0 < seq_len:  # a while loop: runtime range() bounds break the 3.6 interpreter
        tl.store(row + s0 + rs, tl.full([BLOCK_S], 1, tl.uint8), mask=(s0 + rs) < seq_len)
        s0 += BLOCK_S
    tl.store(row + seq_len + rn, anc.to(tl.uint8), mask=nm)
    tl.store(pos_ptr + b * N + i, (seq_len + depth).to(tl.int64))
    tl.store(retr_ptr + b * N + i, (b * N + i).to(tl.int64))
    first_child = tl.min(tl.where((parents == i) & nm, rn, _BIG))
    tl.store(next_tok_ptr + b * N + i, tl.where(first_child == _BIG, -1, first_child).to(tl.int64))
    my_par = tl.sum(tl.where(rn == i, parents, 0))
    sib = tl.min(tl.where((parents == my_par) & (rn > i) & nm & (i > 0), rn, _BIG))
    tl.store(next_sib_ptr + b * N + i, tl.where(sib == _BIG, -1, sib).to(tl.int64))


class TreeBuildWorkspace:
    """Buffers of :func:`tree_build_triton` for up to ``max_batch`` requests.

    chunk: vocabulary chunk of the split top-k (default :func:`topk_chunk`)."""

    def __init__(self, max_batch: int, block_size: int, vocab: int, rank: int, gru_dim: int,
                 topk: int, num_nodes: int, device, *, chunk: int | None = None):
        device = torch.device(device)
        rows = max_batch * topk
        self.topk, self.num_nodes, self.max_batch = topk, num_nodes, max_batch
        self.head = DominoHeadWorkspace(rows, block_size, vocab, rank, gru_dim, device,
                                        enable_sampling=True)
        self.chunk = chunk or topk_chunk(vocab)
        self.n_chunks = triton.cdiv(vocab, self.chunk)
        f32 = dict(dtype=torch.float32, device=device)
        # stage-1 statistics per (row, chunk): max, normalizer, TOPK + 1 candidates
        self.chunk_max = torch.empty(rows * self.n_chunks, **f32)
        self.chunk_sum = torch.empty(rows * self.n_chunks, **f32)
        self.chunk_val = torch.empty(rows * self.n_chunks * (topk + 1), **f32)
        self.chunk_idx = torch.empty(rows * self.n_chunks * (topk + 1), dtype=torch.int32,
                                     device=device)
        self.score = torch.zeros(2, rows, dtype=torch.float64, device=device)
        self.src = torch.empty(rows, dtype=torch.long, device=device)
        self.row_tok = torch.empty(rows, dtype=torch.long, device=device)
        self.tokens = torch.empty(max_batch, num_nodes, dtype=torch.long, device=device)
        self.parents = torch.empty_like(self.tokens)
        self.depth = torch.empty_like(self.tokens)


def _merge_settings(topk: int, n_chunks: int, block_f: int) -> dict:
    """Stage-2 tiles: [BLOCK_F, BLOCK_Q] candidates (C * (TOPK + 1) per row), [BLOCK_F, BLOCK_CC]
    chunk statistics. 8 warps above 1024 candidates per program (sm_90 ptxas at V=151936,
    chunk 4096: TOPK 4 -> [4, 256], 72 registers, no spill with 4 warps; TOPK 8 -> [8, 512]
    spills ~200 bytes with 4 warps)."""
    block_q = next_pow2(n_chunks * (topk + 1))
    return dict(KC=topk + 1, BLOCK_F=block_f, BLOCK_K=next_pow2(topk),
                BLOCK_CC=next_pow2(n_chunks), BLOCK_Q=block_q,
                num_warps=4 if block_f * block_q <= 1024 else 8)


def _launch_chunk_topk(logits, rows, topk, chunk, n_chunks, cm, cs, cv, ci):
    _chunk_topk_kernel[(rows, n_chunks)](logits, logits.stride(0), cm, cs, cv, ci,
                                         V=logits.shape[-1], C=n_chunks, KC=topk + 1,
                                         CHUNK=chunk, num_warps=8 if chunk >= 4096 else 4)


def row_topk_triton(logits: torch.Tensor, topk: int, *, chunk: int | None = None,
                    rows_per_program: int = 4):
    """logits [rows, V] (fp32 / bf16 / fp16, unit last stride) -> (values fp32, indices int64)
    [rows, topk]: the topk largest log-softmax entries of each row (value desc, lowest index on
    ties), by the split-vocabulary kernels of the tree build. Allocates (tests, benchmarks)."""
    if logits.stride(-1) != 1:
        raise ValueError("logits must have a unit last stride")
    rows, v = logits.shape
    chunk = chunk or topk_chunk(v)
    n_chunks = triton.cdiv(v, chunk)
    dev = logits.device
    cm = torch.empty(rows * n_chunks, dtype=torch.float32, device=dev)
    cs = torch.empty_like(cm)
    cv = torch.empty(rows * n_chunks * (topk + 1), dtype=torch.float32, device=dev)
    ci = torch.empty(rows * n_chunks * (topk + 1), dtype=torch.int32, device=dev)
    vals = torch.empty(rows, topk, dtype=torch.float32, device=dev)
    idx = torch.empty(rows, topk, dtype=torch.long, device=dev)
    _launch_chunk_topk(logits, rows, topk, chunk, n_chunks, cm, cs, cv, ci)
    block_f = next_pow2(rows_per_program)
    _merge_topk_kernel[(triton.cdiv(rows, block_f),)](
        cm, cs, cv, ci, logits, logits.stride(0), vals, idx, rows, V=v, C=n_chunks, TOPK=topk,
        BLOCK_V=row_settings(v)["BLOCK_V"],
        **_merge_settings(topk, n_chunks, block_f))
    return vals, idx


def tree_build_triton(z, base_logits, bonus, weights, ws: TreeBuildWorkspace, *,
                      pure_prefix_len: int):
    """z [B, K-1, D], base_logits [B, K-1, V], bonus [B] -> (tokens, parents, depth) [B, N] views
    of the workspace. weights: ``domino_head.prepare_head`` output or None (base logits only).

    Static launch sequence (CUDA-graph capturable for a fixed B)."""
    b, k1, _ = z.shape
    v = base_logits.shape[-1]
    topk, n_nodes = ws.topk, ws.num_nodes
    hws = ws.head
    if b > ws.max_batch or v != hws.vocab or k1 != hws.block_size - 1:
        raise ValueError(f"workspace (batch {ws.max_batch}, K {hws.block_size}, V {hws.vocab}) "
                         f"does not fit B={b}, K-1={k1}, V={v}")
    state = hws.state
    has_head = weights is not None
    if has_head:
        launch_rowmat(z, weights.w1_h, hws.a_h[:b].view(b * k1, -1))
        launch_gru(weights, hws, b, None, state[0, :b], tokens=bonus)
    if k1 == 0 or n_nodes <= 1:  # no depth: only the root (the first selection writes it)
        ws.tokens[:b, 0].copy_(bonus)
        ws.parents[:b, 0].fill_(-1)
        ws.depth[:b, 0].fill_(0)
    stats = (ws.chunk_max, ws.chunk_sum, ws.chunk_val, ws.chunk_idx)
    merge_cfg = _merge_settings(topk, ws.n_chunks, next_pow2(topk))
    block_v = row_settings(v)["BLOCK_V"]
    cur, n_front, count, prev_off = 0, 1, 1, 0
    for i in range(k1):
        if count >= n_nodes:
            break
        take = min(topk, n_nodes - count)
        rows = b * n_front
        use_corr = has_head and i >= pure_prefix_len
        if use_corr:
            launch_rowmat(state[cur, :rows], weights.w1_s, hws.act[:rows], add=hws.a_h[:b, i],
                          rows_per_add=n_front, silu=True)
        launch_corr(base_logits[:, i], hws.act[:rows], weights.w2 if has_head else hws.act,
                    rows, rows_per_req=n_front, use_corr=use_corr, ws=hws,
                    logits_out=hws.logits[:rows])
        _launch_chunk_topk(hws.logits, rows, topk, ws.chunk, ws.n_chunks, *stats)
        _merge_select_kernel[(b,)](*stats, hws.logits, hws.logits.stride(0), ws.score[cur],
                                   bonus, bonus.stride(0), ws.tokens, ws.parents, ws.depth,
                                   ws.score[1 - cur], ws.src, ws.row_tok, n_front, take,
                                   count, prev_off, i + 1,
                                   V=v, C=ws.n_chunks, N=n_nodes, TOPK=topk, FIRST=i == 0,
                                   BLOCK_V=block_v, **merge_cfg)
        if has_head and i + 1 < k1 and count + take < n_nodes:
            launch_gru(weights, hws, b * take, state[cur], state[1 - cur, :b * take],
                       tokens=ws.row_tok, src=ws.src)
        cur = 1 - cur
        n_front, prev_off, count = take, count, count + take
    return ws.tokens[:b], ws.parents[:b], ws.depth[:b]


def tree_layout_triton(parents: torch.Tensor, seq_lens: torch.Tensor,
                       mask_out: torch.Tensor | None = None):
    """parents [B, N], seq_lens [B] (committed prefix lengths) -> (mask, positions, retrieve_index,
    next_token, next_sibling) in SGLang 0.5.17's layout: mask bool, per request N x (seq_len+N)
    rows concatenated (True = may attend); positions [B*N] = seq_len + depth; the rest [B, N].

    mask_out: a preallocated bool buffer of sum(N * (seq_len + N)) entries; without it the size
    is read on the host (a synchronization)."""
    b, n = parents.shape
    device = parents.device
    seq_lens = seq_lens.to(torch.long)
    sizes = n * (seq_lens + n)
    indptr = torch.cumsum(sizes, 0) - sizes
    if mask_out is None:
        mask_out = torch.empty(int(sizes.sum()), dtype=torch.bool, device=device)
    positions = torch.empty(b * n, dtype=torch.long, device=device)
    retrieve = torch.empty(b, n, dtype=torch.long, device=device)
    next_token = torch.empty_like(retrieve)
    next_sibling = torch.empty_like(retrieve)
    parents = parents.contiguous()
    _tree_layout_kernel[(b, n)](parents, seq_lens, indptr, mask_out.view(torch.uint8), positions,
                                retrieve, next_token, next_sibling, N=n,
                                BLOCK_N=max(16, next_pow2(n)), BLOCK_S=256, num_warps=2)
    return mask_out, positions, retrieve, next_token, next_sibling
