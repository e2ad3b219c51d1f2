"""Reference verification: chain and tree, greedy and lossless speculative sampling.

Target outputs are given per node: ``target_logits [N, V]`` (or ``target_probs``) at node j is
the target's next-token distribution after the path root..j. A chain of K-1 proposals is the
path-shaped tree of K nodes (root = bonus token).

Sampled acceptance, at the current node with target distribution p over its children c (in
order), each with draft distribution q_c (a point mass on its token when the tree was built
deterministically, e.g. top-k branching)::

    accept c  if  u_c * q_c(x_c) < p(x_c)            (probability min(1, p(x_c) / q_c(x_c)))
    else      p <- normalize(max(p - q_c, 0)) and try the next sibling

If no child is accepted (or the node is a leaf) the bonus token is drawn from the current p
with ``u_final``. This is lossless: the emitted tokens follow the target distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import sample_from_probs


@dataclass
class VerifyResult:
    accept_len: torch.Tensor  # [B] number of accepted draft tokens (bonus not counted)
    bonus: torch.Tensor  # [B] the token the target adds after the accepted ones
    accepted_nodes: torch.Tensor  # [B, max_depth + 1] node ids from the root, -1 padded


def chain_verify_greedy_ref(draft_tokens: torch.Tensor, target_logits: torch.Tensor):
    """draft_tokens [B, K-1], target_logits [B, K, V] -> (accept_len [B], bonus [B])."""
    pred = target_logits.argmax(-1)
    match = (draft_tokens == pred[:, :-1]).long()
    accept_len = match.cumprod(dim=1).sum(dim=1)
    bonus = pred.gather(1, accept_len[:, None]).squeeze(1)
    return accept_len, bonus


def _empty_result(b: int, n: int) -> VerifyResult:
    return VerifyResult(torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long),
                        torch.full((b, n), -1, dtype=torch.long))


def _children(parents: torch.Tensor) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in range(parents.numel())]
    for j in range(1, parents.numel()):
        kids[int(parents[j])].append(j)
    return kids


def _walk(tokens: torch.Tensor, parents: torch.Tensor):
    """An empty result for the batch and its rows as (row, children lists) for a tree walk."""
    b, n = tokens.shape
    return _empty_result(b, n), ((r, _children(parents[r])) for r in range(b))


def tree_verify_greedy_ref(tokens: torch.Tensor, parents: torch.Tensor,
                           target_logits: torch.Tensor) -> VerifyResult:
    """tokens/parents [B, N], target_logits [B, N, V]: accept the longest matching path."""
    pred = target_logits.argmax(-1)
    res, rows = _walk(tokens, parents)
    acc_len, bonus, nodes = res.accept_len, res.bonus, res.accepted_nodes
    for r, kids in rows:
        cur, path = 0, [0]
        while True:
            nxt = next((c for c in kids[cur] if tokens[r, c] == pred[r, cur]), None)
            if nxt is None:
                break
            cur = nxt
            path.append(cur)
        acc_len[r] = len(path) - 1
        bonus[r] = pred[r, cur]
        nodes[r, : len(path)] = torch.tensor(path)
    return res


def tree_verify_sample_ref(tokens: torch.Tensor, parents: torch.Tensor,
                           target_probs: torch.Tensor, draft_probs: torch.Tensor | None,
                           uniforms: torch.Tensor, uniform_final: torch.Tensor) -> VerifyResult:
    """Lossless multi-candidate rejection sampling.

    tokens/parents [B, N]; target_probs [B, N, V]; draft_probs [B, N, V] (row j: the draft
    distribution that proposed node j) or None for point masses; uniforms [B, N] (coin of
    node j at [:, j]); uniform_final [B].
    """
    res, rows = _walk(tokens, parents)
    acc_len, bonus, nodes = res.accept_len, res.bonus, res.accepted_nodes
    for r, kids in rows:
        cur, path = 0, [0]
        while True:
            p = target_probs[r, cur].double().clone()
            accepted = None
            for c in kids[cur]:
                x = int(tokens[r, c])
                if draft_probs is None:
                    q = torch.zeros_like(p)
                    q[x] = 1.0
                else:
                    q = draft_probs[r, c].double()
                if float(uniforms[r, c]) * float(q[x]) < float(p[x]):
                    accepted = c
                    break
                p = torch.clamp(p - q, min=0)
                total = float(p.sum())
                if total <= 0:
                    break  # p == q: rejection has probability 0; nothing left to draw from
                p = p / total
            if accepted is None:
                break
            cur = accepted
            path.append(cur)
        acc_len[r] = len(path) - 1
        bonus[r] = sample_from_probs(p.float(), uniform_final[r])
        nodes[r, : len(path)] = torch.tensor(path)
    return res


def chain_verify_sample_ref(draft_tokens, bonus, target_probs, draft_probs, uniforms,
                            uniform_final) -> VerifyResult:
    """Sampled chain verification: draft_tokens [B, K-1], bonus [B], target_probs [B, K, V],
    draft_probs [B, K-1, V] (q of each proposal) or None; uniforms [B, K-1]; uniform_final [B].
    Runs the tree reference on the path-shaped tree."""
    from .tree import chain_parents

    b, k1 = draft_tokens.shape
    tokens = torch.cat([bonus[:, None], draft_tokens], dim=1)
    parents = chain_parents(k1 + 1).expand(b, -1)
    dq = None
    if draft_probs is not None:
        dq = torch.cat([torch.zeros_like(draft_probs[:, :1]), draft_probs], dim=1)
    u = torch.cat([torch.zeros_like(uniforms[:, :1]), uniforms], dim=1)
    return tree_verify_sample_ref(tokens, parents, target_probs, dq, u, uniform_final)
