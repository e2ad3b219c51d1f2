"""Tree and chain verification, greedy and lossless rejection sampling, in one walk kernel.

Contracts: ``core.verify.tree_verify_greedy_ref`` / ``tree_verify_sample_ref`` and, for a chain
(the path-shaped tree, ``IS_CHAIN``: parents implicit, node j's token / coin / q at j - 1),
``core.verify.chain_verify_greedy_ref`` / ``core.chain_verify_sample_ref``.

One program per request scans the nodes in index order: every node comes after its parent and
siblings in rank order (depth order, or the best-first tree's join order), so the children of the
current node are met in order, after it (a single pass).
Greedy: accept the first child whose token is the target argmax at the current node. Sampled:
accept child c if ``u_c * q_c(x_c) < p(x_c)``; on rejection the residual
``max(p - q_c, 0)`` is written to a per-request fp32 workspace row (normalizer kept as a scalar),
so an accepted path costs O(1) reads per node and only rejections touch the vocabulary. The bonus
is the argmax (greedy) or an inverse-CDF draw at ``uniform_final`` from the current distribution.
The residual is fp32 (the reference works in fp64); acceptance differs only for coins within
~1e-7 of the threshold.

Outputs: accept_len [B], bonus [B], accepted_nodes [B, N] (node ids from the root, -1 padded)
and, optionally, accept_index [B, N] = b * N + node (the verify-batch KV slots to keep, -1 pad).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import row_settings
from .domino_head import _sample_row

_BIG = tl.constexpr(2 ** 30)


@triton.jit
def _row_argmax_kernel(x_ptr, s_x, out_ptr, V: tl.constexpr, BLOCK_V: tl.constexpr):
    """out[row] = argmax of x[row, :V] (lowest index on ties)."""
    row = tl.program_id(0)
    ptr = x_ptr + row.to(tl.int64) * s_x
    rv = tl.arange(0, BLOCK_V)
    best_v = float("-inf")
    best_i = 0
    for v0 in range(0, V, BLOCK_V):
        x = tl.load(ptr + v0 + rv, mask=(v0 + rv) < V, other=float("-inf")).to(tl.float32)
        tmax, targ = tl.max(x, axis=0, return_indices=True, return_indices_tie_break_left=True)
        upd = tmax > best_v
        best_i = tl.where(upd, v0 + targ, best_i)
        best_v = tl.where(upd, tmax, best_v)
    tl.store(out_ptr + row, best_i.to(tl.int64))


@triton.jit
def _tree_verify_kernel(tok_ptr, s_tok, par_ptr, s_par, pred_ptr, p_ptr, s_pb, s_pn, q_ptr, s_qb,
                        s_qn, u_ptr, s_u, uf_ptr, ws_ptr, acc_len_ptr, bonus_ptr, nodes_ptr,
                        index_ptr, N: tl.constexpr, V: tl.constexpr,
                        IS_CHAIN: tl.constexpr,  # 1: chain inputs start at node 1
                        GREEDY: tl.constexpr, HAS_Q: tl.constexpr, WRITE_INDEX: tl.constexpr,
                        BLOCK_V: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    rv = tl.arange(0, BLOCK_V)
    ws_row = ws_ptr + b * V
    cur = tl.zeros([], tl.int64)
    depth = tl.zeros([], tl.int32)
    in_ws = tl.zeros([], tl.int32)
    dead = tl.zeros([], tl.int32)
    ws_total = tl.full([], 1.0, tl.float32)
    for j in range(1, N):
        if IS_CHAIN:
            par = tl.zeros([], tl.int64) + (j - 1)
        else:
            par = tl.load(par_ptr + b * s_par + j).to(tl.int64)
        active = (par == cur) & (dead == 0)
        x = tl.load(tok_ptr + b * s_tok + (j - IS_CHAIN), mask=active, other=0).to(tl.int64)
        if GREEDY:
            ok = active & (x == tl.load(pred_ptr + b * N + cur))
        else:
            prow = p_ptr + b * s_pb + cur * s_pn
            px = tl.where(in_ws != 0, tl.load(ws_row + x, mask=active, other=0.0) / ws_total,
                          tl.load(prow + x, mask=active, other=0.0))
            if HAS_Q:
                qrow = q_ptr + b * s_qb + (j - IS_CHAIN) * s_qn
                qx = tl.load(qrow + x, mask=active, other=0.0)
            else:
                qx = 1.0
            u = tl.load(u_ptr + b * s_u + (j - IS_CHAIN))
            ok = active & (u * qx < px)
            if active & (ok == 0):
                # residual max(p - q, 0) into the workspace row (normalizer kept in ws_total)
                total = 0.0
                for v0 in range(0, V, BLOCK_V):
                    vm = (v0 + rv) < V
                    src = tl.where(in_ws != 0, tl.load(ws_row + v0 + rv, mask=vm, other=0.0)
                                   / ws_total, tl.load(prow + v0 + rv, mask=vm, other=0.0))
                    if HAS_Q:
                        q = tl.load(qrow + v0 + rv, mask=vm, other=0.0)
                    else:
                        q = tl.where(v0 + rv == x, 1.0, 0.0)
                    r = tl.maximum(src - q, 0.0)
                    total += tl.sum(tl.where(vm, r, 0.0))
                    tl.store(ws_row + v0 + rv, r, mask=vm)
                tl.debug_barrier()
                dead = tl.where(total <= 0, 1, dead)
                ws_total = tl.where(total > 0, total, ws_total)
                in_ws = tl.full([], 1, tl.int32)
        depth += ok.to(tl.int32)
        tl.store(nodes_ptr + b * N + depth, j, mask=ok)
        if WRITE_INDEX:
            tl.store(index_ptr + b * N + depth, b * N + j, mask=ok)
        cur = tl.where(ok, j, cur)
        in_ws = tl.where(ok, 0, in_ws)
    if GREEDY:
        bonus = tl.load(pred_ptr + b * N + cur)
    else:
        if dead != 0:
            bonus = tl.full([], V - 1, tl.int64)  # the reference's draw from an all-zero p
        elif in_ws != 0:
            bonus = _sample_row(ws_row, V, tl.load(uf_ptr + b), BLOCK_V).to(tl.int64)
        else:
            bonus = _sample_row(p_ptr + b * s_pb + cur * s_pn, V, tl.load(uf_ptr + b),
                                BLOCK_V).to(tl.int64)
    tl.store(acc_len_ptr + b, depth.to(tl.int64))
    tl.store(bonus_ptr + b, bonus)


def row_argmax_triton(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., V] (unit last stride) -> argmax [...] int64, lowest index on ties."""
    rows = x.reshape(-1, x.shape[-1])
    out = out if out is not None else torch.empty(rows.shape[0], dtype=torch.long,
                                                  device=x.device)
    _row_argmax_kernel[(rows.shape[0],)](rows, rows.stride(0), out, V=x.shape[-1],
                                         **row_settings(x.shape[-1]))
    return out.view(x.shape[:-1])


def tree_verify_triton(tokens: torch.Tensor, parents: torch.Tensor | None, *,
                       target_logits: torch.Tensor | None = None,
                       target_probs: torch.Tensor | None = None,
                       draft_probs: torch.Tensor | None = None,
                       uniforms: torch.Tensor | None = None,
                       uniform_final: torch.Tensor | None = None,
                       workspace: torch.Tensor | None = None,
                       accept_index: torch.Tensor | None = None):
    """Verify B trees of N nodes (greedy with target_logits, sampled with target_probs).

    tokens [B, N] (node 0 the root) and parents [B, N]; or parents=None for chains: tokens are
    the drafts [B, N-1] (nodes 1..N-1), draft_probs [B, N-1, V] and uniforms [B, N-1] likewise.
    target_logits / target_probs [B, N, V]; draft_probs None = point masses (a deterministic
    tree); uniform_final [B]; workspace [B, V] fp32 (sampled mode; allocated if None).
    Returns (accept_len [B], bonus [B], accepted_nodes [B, N]); accept_index [B, N] (int64,
    -1 padded, global slots b*N + node) is filled when given.
    """
    greedy = target_logits is not None
    target = target_logits if greedy else target_probs
    b, n, v = target.shape
    device = target.device
    acc_len = torch.empty(b, dtype=torch.long, device=device)
    bonus = torch.empty(b, dtype=torch.long, device=device)
    nodes = torch.full((b, n), -1, dtype=torch.long, device=device)
    nodes[:, 0] = 0
    if accept_index is not None:
        accept_index.fill_(-1)
        accept_index[:, 0] = torch.arange(b, device=device) * n
    pred = row_argmax_triton(target_logits) if greedy else None
    if not greedy and workspace is None:
        workspace = torch.empty(b, v, dtype=torch.float32, device=device)
    is_chain = parents is None
    dummy = tokens
    p = target_probs if not greedy else dummy
    q = draft_probs if draft_probs is not None else dummy
    u = uniforms if uniforms is not None else dummy
    _tree_verify_kernel[(b,)](
        tokens, tokens.stride(0), parents if not is_chain else tokens,
        parents.stride(0) if not is_chain else 0, pred if greedy else dummy,
        p, p.stride(0) if not greedy else 0, p.stride(1) if not greedy else 0,
        q, q.stride(0) if draft_probs is not None else 0,
        q.stride(1) if draft_probs is not None else 0, u, u.stride(0) if uniforms is not None else 0,
        uniform_final if uniform_final is not None else dummy,
        workspace if workspace is not None else dummy, acc_len, bonus, nodes,
        accept_index if accept_index is not None else nodes, N=n, V=v, IS_CHAIN=int(is_chain),
        GREEDY=greedy, HAS_Q=draft_probs is not None, WRITE_INDEX=accept_index is not None,
        **row_settings(v))
    return acc_len, bonus, nodes
