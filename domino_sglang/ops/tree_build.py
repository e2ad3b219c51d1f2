"""Draft-tree construction from the Domino head, and the tree's SGLang attention layout.

``tree_build_ref`` is ``core.tree.build_tree_ref``; ``tree_layout_ref`` assembles SGLang 0.5.17's
verify inputs from ``core.tree.tree_attention_mask`` / ``tree_positions``.
"""

from __future__ import annotations

import torch

from ..core.drafter import HeadWeights
from ..core.rollout import proposal_hidden
from ..core.tree import DraftTree, build_tree_ref, tree_attention_mask, tree_num_nodes, tree_positions
from . import resolve_impl


def tree_build_ref(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                   pure_prefix_len: int, topk: int, budget: int) -> DraftTree:
    """hidden [B, K, D], bonus [B] -> DraftTree [B, N], N = tree_num_nodes(K, topk, budget)."""
    return build_tree_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                          pure_prefix_len=pure_prefix_len, topk=topk, budget=budget)


def tree_build(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
               pure_prefix_len: int, topk: int, budget: int, impl: str = "auto",
               gi_table_dtype=torch.float32) -> DraftTree:
    """Same contract as :func:`tree_build_ref`; impl "auto" | "triton" | "ref"."""
    if resolve_impl(impl, hidden.device) == "ref":
        return tree_build_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                              pure_prefix_len=pure_prefix_len, topk=topk, budget=budget)
    from domino_sglang.kernels.domino_head import prepare_head
    from domino_sglang.kernels.tree_build import TreeBuildWorkspace, tree_build_triton

    z = proposal_hidden(hidden, shift_label)
    b, k1, _ = z.shape
    v = lm_head.shape[0]
    base = z.float() @ lm_head.float().t()
    weights = prepare_head(head, embed, gi_table_dtype=gi_table_dtype) if head is not None else None
    ws = TreeBuildWorkspace(b, k1 + 1, v, head.w2.shape[1] if head is not None else 16,
                            head.gru_dim if head is not None else 16, topk,
                            tree_num_nodes(k1 + 1, topk, budget), hidden.device)
    tok, par, dep = tree_build_triton(z, base, bonus, weights, ws, pure_prefix_len=pure_prefix_len)
    return DraftTree(tok.clone(), par.clone(), dep.clone())


def tree_layout_ref(parents: torch.Tensor, seq_lens: torch.Tensor):
    """parents [B, N], seq_lens [B] -> (mask, positions, retrieve_index, next_token, next_sibling):
    mask bool [sum_b N * (seq_len_b + N)] (per request N rows of [prefix all True ; ancestors]),
    positions [B*N] = seq_len + depth, retrieve_index [B, N] = b*N + i, next_token [B, N] (lowest
    child or -1), next_sibling [B, N] (next higher sibling or -1)."""
    b, n = parents.shape
    anc = tree_attention_mask(parents.cpu())
    depth = anc.sum(-1) - 1
    positions = tree_positions(depth, seq_lens.cpu().long()).reshape(-1)
    rows = [torch.cat([torch.ones(n, int(seq_lens[r]), dtype=torch.bool), anc[r]], dim=1)
            .reshape(-1) for r in range(b)]
    retrieve = torch.arange(b * n).view(b, n)
    next_token = torch.full((b, n), -1, dtype=torch.long)
    next_sibling = torch.full((b, n), -1, dtype=torch.long)
    par = parents.cpu()
    for r in range(b):
        for j in range(n - 1, 0, -1):  # descending, so the lowest index is written last
            p = int(par[r, j])
            next_sibling[r, j] = next_token[r, p]
            next_token[r, p] = j
    return torch.cat(rows), positions, retrieve, next_token, next_sibling


def tree_layout(parents: torch.Tensor, seq_lens: torch.Tensor, impl: str = "auto",
                mask_out: torch.Tensor | None = None):
    """Same contract as :func:`tree_layout_ref`; impl "auto" | "triton" | "ref"."""
    if resolve_impl(impl, parents.device) == "ref":
        return tuple(t.to(parents.device) for t in tree_layout_ref(parents, seq_lens))
    from domino_sglang.kernels.tree_build import tree_layout_triton

    return tree_layout_triton(parents, seq_lens, mask_out)
