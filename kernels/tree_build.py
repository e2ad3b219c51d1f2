"""Draft-tree construction from the Domino head, and the tree's attention layout for SGLang.

Contracts: ``domino_sglang.ops.tree_build.tree_build_ref`` (= ``core.tree.build_tree_ref``) and
``tree_layout_ref`` (SGLang 0.5.17 FULL-mask layout).

The tree shape per depth is static (depth d >= 1 holds ``min(topk, N - 1 - (d-1) * topk)``
nodes, node ids in depth order), so building is a fixed launch sequence per depth, with the
frontier rows laid out ``row = request * F + f``:

* ``act = SiLU(a_h[:, i] + s_row @ W1_s^T)`` and the full-vocabulary logits of every frontier
  row (the head kernels of ``domino_head``, logits written to the workspace);
* ``_row_topk_kernel``: per row, log-softmax and the topk best (value desc, lowest index);
* ``_tree_select_kernel``: per request, cumulative scores (fp64, like the reference's Python
  floats) of the F * topk candidates, the best ``take`` (ties: earlier parent, better rank);
* the GRU of each new node from its parent's state (``_gru_kernel`` with a source-row map).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import next_pow2, row_settings
from .domino_head import DominoHeadWorkspace, launch_corr, launch_gru, launch_rowmat

_BIG = tl.constexpr(2 ** 30)


@triton.jit
def _row_topk_kernel(lg_ptr, s_lg, val_ptr, idx_ptr, V: tl.constexpr, TOPK: tl.constexpr,
                     BLOCK_V: tl.constexpr):
    """val/idx [row, TOPK]: the TOPK largest log-softmax values of a logits row (ties: lower
    index first), one pass per rank after the max / normalizer passes."""
    row = tl.program_id(0)
    ptr = lg_ptr + row.to(tl.int64) * s_lg
    rv = tl.arange(0, BLOCK_V)
    m = float("-inf")
    for v0 in range(0, V, BLOCK_V):
        m = tl.maximum(m, tl.max(tl.load(ptr + v0 + rv, mask=(v0 + rv) < V,
                                         other=float("-inf"))))
    denom = 0.0
    for v0 in range(0, V, BLOCK_V):
        x = tl.load(ptr + v0 + rv, mask=(v0 + rv) < V, other=float("-inf"))
        denom += tl.sum(tl.exp(x - m))
    log_denom = tl.log(denom)
    prev_v = float("inf")
    prev_i = -1
    for k in range(TOPK):
        best_v = float("-inf")
        best_i = _BIG
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + rv
            lp = (tl.load(ptr + idx, mask=idx < V, other=float("-inf")) - m) - log_denom
            ok = (idx < V) & ((lp < prev_v) | ((lp == prev_v) & (idx > prev_i)))
            lp = tl.where(ok, lp, float("-inf"))
            tmax = tl.max(lp)
            targ = tl.min(tl.where(ok & (lp == tmax), idx, _BIG))
            upd = (tmax > best_v) | ((tmax == best_v) & (targ < best_i))
            best_i = tl.where(upd, targ, best_i)
            best_v = tl.where(upd, tmax, best_v)
        tl.store(val_ptr + row * TOPK + k, best_v)
        tl.store(idx_ptr + row * TOPK + k, best_i.to(tl.int64))
        prev_v = best_v
        prev_i = best_i


@triton.jit
def _tree_select_kernel(val_ptr, idx_ptr, score_ptr, tok_ptr, par_ptr, dep_ptr, new_score_ptr,
                        new_src_ptr, new_tok_ptr, n_front, take, node_off, prev_off, depth,
                        N: tl.constexpr, TOPK: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per request: the `take` best of the n_front * TOPK candidates by cumulative log-prob
    (ties: earlier parent, then better rank = lower flat index) become nodes node_off + j."""
    b = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    f = c // TOPK
    valid = f < n_front
    row = b * n_front + f
    sc = tl.load(score_ptr + row, mask=valid, other=0.0) + \
        tl.load(val_ptr + row * TOPK + c % TOPK, mask=valid, other=0.0).to(tl.float64)
    sc = tl.where(valid, sc, float("-inf"))
    cand = tl.load(idx_ptr + row * TOPK + c % TOPK, mask=valid, other=0)
    for j in range(TOPK):
        best = tl.max(sc)
        pick = tl.min(tl.where(valid & (sc == best), c, _BIG))
        on = j < take
        tok = tl.sum(tl.where(c == pick, cand, 0))
        node = node_off + j
        tl.store(tok_ptr + b * N + node, tok, mask=on)
        tl.store(par_ptr + b * N + node, (prev_off + pick // TOPK).to(tl.int64), mask=on)
        tl.store(dep_ptr + b * N + node, depth + tl.zeros([], tl.int64), mask=on)
        tl.store(new_score_ptr + b * take + j, best, mask=on)
        tl.store(new_src_ptr + b * take + j, (b * n_front + pick // TOPK).to(tl.int64), mask=on)
        tl.store(new_tok_ptr + b * take + j, tok, mask=on)
        sc = tl.where(c == pick, float("-inf"), sc)
        valid = valid & (c != pick)


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
    """Buffers of :func:`tree_build_triton` for up to ``max_batch`` requests."""

    def __init__(self, max_batch: int, block_size: int, vocab: int, rank: int, gru_dim: int,
                 topk: int, num_nodes: int, device):
        device = torch.device(device)
        rows = max_batch * topk
        self.topk, self.num_nodes, self.max_batch = topk, num_nodes, max_batch
        self.head = DominoHeadWorkspace(rows, block_size, vocab, rank, gru_dim, device,
                                        enable_sampling=True)
        self.cand_val = torch.empty(rows, topk, dtype=torch.float32, device=device)
        self.cand_idx = torch.empty(rows, topk, dtype=torch.long, device=device)
        self.score = torch.zeros(2, rows, dtype=torch.float64, device=device)
        self.src = torch.empty(rows, dtype=torch.long, device=device)
        self.row_tok = torch.empty(rows, dtype=torch.long, device=device)
        self.tokens = torch.empty(max_batch, num_nodes, dtype=torch.long, device=device)
        self.parents = torch.empty_like(self.tokens)
        self.depth = torch.empty_like(self.tokens)


def tree_build_triton(z, base_logits, bonus, weights, ws: TreeBuildWorkspace, *,
                      pure_prefix_len: int):
    """z [B, K-1, D], base_logits [B, K-1, V], bonus [B] -> (tokens, parents, depth) [B, N] views
    of the workspace. weights: ``domino_head.prepare_head`` output or None (base logits only).

    Static launch sequence (CUDA-graph capturable for a fixed B)."""
    b, k1, _ = z.shape
    v = base_logits.shape[-1]
    topk, n_nodes = ws.topk, ws.num_nodes
    hws = ws.head
    tokens, parents, depth = ws.tokens[:b], ws.parents[:b], ws.depth[:b]
    tokens[:, 0].copy_(bonus)
    parents[:, 0].fill_(-1)
    depth[:, 0].fill_(0)
    ws.score[0, :b].zero_()
    state = hws.state
    has_head = weights is not None
    if has_head:
        launch_rowmat(z, weights.w1_h, hws.a_h[:b].view(b * k1, -1))
        launch_gru(weights, hws, b, None, state[0, :b], tokens=bonus)
    cur, n_front, count, prev_off = 0, 1, 1, 0
    row_cfg = row_settings(v)
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
        _row_topk_kernel[(rows,)](hws.logits, hws.logits.stride(0), ws.cand_val, ws.cand_idx,
                                  V=v, TOPK=topk, **row_cfg)
        _tree_select_kernel[(b,)](ws.cand_val, ws.cand_idx, ws.score[cur], ws.tokens, ws.parents,
                                  ws.depth, ws.score[1 - cur], ws.src, ws.row_tok, n_front, take,
                                  count, prev_off, i + 1, N=n_nodes, TOPK=topk,
                                  BLOCK_C=next_pow2(topk * topk), num_warps=1)
        if has_head and i + 1 < k1 and count + take < n_nodes:
            launch_gru(weights, hws, b * take, state[cur], state[1 - cur, :b * take],
                       tokens=ws.row_tok, src=ws.src)
        cur = 1 - cur
        n_front, prev_off, count = take, count, count + take
    return tokens, parents, depth


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
