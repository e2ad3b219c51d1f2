"""Draft trees built from the Domino head, and their attention layout.

A tree of N nodes is given by ``parents [N]`` (``parents[0] = -1``: node 0 is the root, the
bonus token) and ``tokens [N]``. Nodes are in depth order and siblings in rank order (better
first); a chain is the path-shaped tree ``parents = [-1, 0, 1, ..., N-2]``.

Tree building (beam over the head): the backbone's hidden states depend only on the position,
so depth d uses proposal hidden state ``z_{d-1}`` for every node at that depth; the path only
changes the GRU state. At each depth every frontier node proposes its ``topk`` most likely
tokens under its own final logits (its own GRU state); the ``topk`` candidates with the highest
cumulative log-probability (ties: earlier parent, then better rank) join the tree, while the
node budget lasts, and form the next frontier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .drafter import HeadWeights
from .head import correction, gru_cell
from .rollout import proposal_hidden


@dataclass
class DraftTree:
    tokens: torch.Tensor  # [B, N] int64, tokens[:, 0] = bonus
    parents: torch.Tensor  # [B, N] int64, parents[:, 0] = -1
    depth: torch.Tensor  # [B, N] int64

    @property
    def num_nodes(self) -> int:
        return self.tokens.shape[1]


def chain_parents(n: int, device="cpu") -> torch.Tensor:
    return torch.arange(-1, n - 1, device=device)


def tree_num_nodes(block_size: int, topk: int, budget: int) -> int:
    """Static node count of a built tree: the root plus up to topk nodes per depth."""
    return min(budget, 1 + (block_size - 1) * topk)


def best_first_num_nodes(block_size: int, topk: int, budget: int) -> int:
    """Node count of a best-first tree: the budget, or all a topk-ary tree of depth K-1 holds."""
    return min(int(budget), 1 + sum(int(topk) ** d for d in range(1, int(block_size))))


def build_tree_ref(hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                   embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                   pure_prefix_len: int, topk: int, budget: int) -> DraftTree:
    """hidden [B, K, D], bonus [B] -> a DraftTree with N = tree_num_nodes(K, topk, budget)."""
    z = proposal_hidden(hidden, shift_label).float()
    b, k1, _ = z.shape
    n_nodes = tree_num_nodes(k1 + 1, topk, budget)
    base = z @ lm_head.float().t()
    out_tok = torch.empty(b, n_nodes, dtype=torch.long, device=z.device)
    out_par = torch.empty_like(out_tok)
    out_dep = torch.empty_like(out_tok)
    for r in range(b):
        tok, par, dep = [int(bonus[r])], [-1], [0]
        s0 = None
        if head is not None:
            s0 = gru_cell(embed[bonus[r:r + 1]], torch.zeros(1, head.gru_dim, device=z.device),
                          head.w_ih, head.w_hh)
        frontier = [(0, s0, 0.0)]  # (node index, GRU state after the node, cumulative logp)
        for i in range(k1):
            if len(tok) >= n_nodes:
                break
            cands = []
            for f_rank, (node, s, score) in enumerate(frontier):
                li = base[r:r + 1, i]
                if head is not None and i >= pure_prefix_len:
                    li = li + correction(z[r:r + 1, i], s, head)
                logp = torch.log_softmax(li[0], dim=-1)
                vals, idx = _topk_lowest_index(logp, topk)
                for c_rank in range(vals.numel()):
                    cands.append((score + float(vals[c_rank]), f_rank, c_rank, node, s,
                                  int(idx[c_rank])))
            cands.sort(key=lambda c: (-c[0], c[1], c[2]))
            take = cands[: min(topk, n_nodes - len(tok))]
            frontier = []
            for score, _, _, node, s, t in take:
                tok.append(t)
                par.append(node)
                dep.append(i + 1)
                s_new = None
                if head is not None and i + 1 < k1:
                    s_new = gru_cell(embed[t:t + 1], s, head.w_ih, head.w_hh)
                frontier.append((len(tok) - 1, s_new, score))
        out_tok[r] = torch.tensor(tok, device=z.device)
        out_par[r] = torch.tensor(par, device=z.device)
        out_dep[r] = torch.tensor(dep, device=z.device)
    return DraftTree(out_tok, out_par, out_dep)


def build_tree_best_first_ref(hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                              embed: torch.Tensor, head: HeadWeights | None, *,
                              shift_label: bool, pure_prefix_len: int, topk: int,
                              budget: int) -> DraftTree:
    """A budgeted draft tree grown best first (a reference for what a tree of ``budget`` nodes
    could accept; no kernel builds it yet): starting from the root, the candidate with the
    highest cumulative log-probability over the whole tree joins next, whatever its depth, and
    its own ``topk`` best children become candidates (ties: the earlier candidate). A node's
    cumulative log-probability is at most its parent's, so the nodes taken are the ``budget - 1``
    most probable paths under the head's own distribution: where the head is calibrated, the
    tree of that size with the largest expected greedy acceptance. Depth is capped at K-1 (one
    proposal hidden state per depth). Output nodes are in the order they joined (a parent
    before its children), not in :func:`build_tree_ref`'s depth order. hidden [B, K, D],
    bonus [B] -> DraftTree with N = min(budget, the nodes a topk-ary tree of depth K-1 holds)."""
    import heapq

    z = proposal_hidden(hidden, shift_label).float()
    b, k1, _ = z.shape
    n_nodes = best_first_num_nodes(k1 + 1, topk, budget)
    base = z @ lm_head.float().t()
    out_tok = torch.empty(b, n_nodes, dtype=torch.long, device=z.device)
    out_par, out_dep = torch.empty_like(out_tok), torch.empty_like(out_tok)
    for r in range(b):
        tok, par, dep = [int(bonus[r])], [-1], [0]
        states = [None if head is None else
                  gru_cell(embed[bonus[r:r + 1]], torch.zeros(1, head.gru_dim, device=z.device),
                           head.w_ih, head.w_hh)]
        heap: list = []
        order = 0

        def expand(node: int, score: float) -> None:
            nonlocal order
            i = dep[node]  # proposal hidden z_i proposes depth i + 1
            if i >= k1:
                return
            li = base[r:r + 1, i]
            if head is not None and i >= pure_prefix_len:
                li = li + correction(z[r:r + 1, i], states[node], head)
            vals, idx = _topk_lowest_index(torch.log_softmax(li[0], dim=-1), topk)
            for v, t in zip(vals.tolist(), idx.tolist()):
                heapq.heappush(heap, (-(score + v), order, node, int(t)))
                order += 1

        expand(0, 0.0)
        while len(tok) < n_nodes and heap:
            neg, _, node, t = heapq.heappop(heap)
            tok.append(t)
            par.append(node)
            dep.append(dep[node] + 1)
            states.append(None if head is None or dep[-1] >= k1 else
                          gru_cell(embed[t:t + 1], states[node], head.w_ih, head.w_hh))
            expand(len(tok) - 1, -neg)
        out_tok[r] = torch.tensor(tok, device=z.device)
        out_par[r] = torch.tensor(par, device=z.device)
        out_dep[r] = torch.tensor(dep, device=z.device)
    return DraftTree(out_tok, out_par, out_dep)


def _topk_lowest_index(x: torch.Tensor, k: int):
    """Top-k values/indices of a 1-D tensor, ties broken by the lower index."""
    order = torch.sort(x, descending=True, stable=True).indices[:k]
    return x[order], order


def tree_attention_mask(parents: torch.Tensor) -> torch.Tensor:
    """parents [B, N] -> bool [B, N, N]: mask[b, i, j] = j is i or an ancestor of i."""
    b, n = parents.shape
    mask = torch.zeros(b, n, n, dtype=torch.bool, device=parents.device)
    for r in range(b):
        for i in range(n):
            j = i
            while j >= 0:
                mask[r, i, j] = True
                j = int(parents[r, j])
    return mask


def tree_positions(depth: torch.Tensor, prefix_len: torch.Tensor) -> torch.Tensor:
    """Absolute positions [B, N] of the nodes: prefix length (= position of the root) + depth."""
    return prefix_len[:, None] + depth
