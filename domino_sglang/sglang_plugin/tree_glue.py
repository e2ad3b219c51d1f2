"""Pure tensor glue between a Domino draft tree and SGLang 0.5.17's tree verify (tree mode).

No SGLang import here; every function is device-agnostic torch with no host synchronisation
(no ``.item()``, no boolean-mask indexing), so the worker can call it on the forward stream of
an overlap-scheduled step. The design is in ``docs/tree_mode.md``.

Conventions (one verify step, ``bs`` requests, ``N`` nodes per request = the node budget =
``speculative_num_draft_tokens``):

* a tree is ``tokens [bs, N]`` / ``parents [bs, N]`` with every node after its parent and
  siblings best first (``parents[:, 0] = -1``: node 0 is the root = the bonus token of the
  previous step), as produced in depth order by ``domino_sglang.ops.tree_build.tree_build``
  (``core.tree.build_tree_ref``);
* ``seq_lens [bs]`` is the committed prefix (the verify batch's ``seq_lens``); node ``i`` of
  request ``b`` is verified in KV slot ``verify_loc[b, i] = req_to_token[req_b, prefix_b + i]``;
* SGLang's accept kernels (``verify_tree_greedy_func`` / ``tree_speculative_sampling_target_
  only``) return ``accept_index [bs, D]`` (global node ids ``b*N + i`` from the root, -1 padded)
  and ``accept_token_num [bs]`` (accepted drafts, bonus excluded); the bonus is
  ``predicts[accept_index[b, accept_token_num[b]]]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.tree_build import tree_layout


@dataclass
class TreeVerifyTensors:
    """What ``DFlashVerifyInput`` / ``EagleVerifyInput`` and the accept kernels need."""

    draft_token: torch.Tensor  # [bs*N] int64: the tokens fed to the target (root first)
    positions: torch.Tensor  # [bs*N] int64: seq_len + depth
    custom_mask: torch.Tensor  # bool [sum_b N*(seq_len_b+N)], FULL layout, True = may attend
    candidates: torch.Tensor  # [bs, N] int64 (= tokens)
    retrieve_index: torch.Tensor  # [bs, N] int64 = b*N + i
    retrieve_next_token: torch.Tensor  # [bs, N] int64: lowest-index child or -1
    retrieve_next_sibling: torch.Tensor  # [bs, N] int64: next higher-index sibling or -1
    max_depth: int  # static: longest possible path in nodes, root included (accept_index width)


def tree_max_path_nodes(num_nodes: int, block_size: int) -> int:
    """Static width of ``accept_index``: a path has at most min(N, B) nodes (depths 0..B-1)."""
    return min(int(num_nodes), int(block_size))


def build_tree_verify_tensors(tokens: torch.Tensor, parents: torch.Tensor,
                              seq_lens: torch.Tensor, *, block_size: int, impl: str = "auto",
                              mask_out: torch.Tensor | None = None) -> TreeVerifyTensors:
    """tokens/parents [bs, N] + committed seq_lens [bs] -> the verify tensors.

    ``impl`` picks ``ops.tree_build.tree_layout`` ("ref" on CPU, the Triton
    ``tree_layout_triton`` on CUDA under "auto"); ``mask_out`` lets the worker pass the
    static FULL-mask buffer it feeds to the target graph."""
    bs, n = tokens.shape
    mask, positions, retr, nxt, sib = tree_layout(parents, seq_lens, impl=impl, mask_out=mask_out)
    dev = tokens.device
    return TreeVerifyTensors(
        draft_token=tokens.reshape(-1).to(torch.int64),
        positions=positions.reshape(-1).to(device=dev, dtype=torch.int64),
        custom_mask=mask.to(dev),
        candidates=tokens.to(torch.int64),
        retrieve_index=retr.to(device=dev, dtype=torch.int64),
        retrieve_next_token=nxt.to(device=dev, dtype=torch.int64),
        retrieve_next_sibling=sib.to(device=dev, dtype=torch.int64),
        max_depth=tree_max_path_nodes(n, block_size),
    )


def full_mask_len(seq_lens: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Per-request FULL-mask length N*(seq_len+N) (the Triton backend's ``mask_indptr`` step)."""
    return num_nodes * (seq_lens.to(torch.int64) + num_nodes)


def causal_chain_parents(bs: int, n: int, device=None) -> torch.Tensor:
    """The path-shaped tree [bs, n]: its FULL mask is the causal verify mask of a chain."""
    return torch.arange(-1, n - 1, device=device).expand(bs, n).contiguous()


def alloc_accept_buffers(bs: int, num_nodes: int, max_depth: int, device=None):
    """(predicts [bs*N] int32, accept_index [bs, D] int32 = -1, accept_token_num [bs] int32):
    the output buffers of ``verify_tree_greedy_func`` / ``tree_speculative_sampling_target_only``."""
    return (torch.zeros(bs * num_nodes, dtype=torch.int32, device=device),
            torch.full((bs, max_depth), -1, dtype=torch.int32, device=device),
            torch.zeros(bs, dtype=torch.int32, device=device))


@dataclass
class TreeAcceptResult:
    path: torch.Tensor  # [bs, D] int64 local node ids from the root, -1 padded
    accept_len: torch.Tensor  # [bs] int64 accepted drafts (bonus excluded)
    commit_lens: torch.Tensor  # [bs] int32 = accept_len + 1 (GenerationBatchResult.accept_lens)
    bonus: torch.Tensor  # [bs] int64


def accept_from_sglang(predicts: torch.Tensor, accept_index: torch.Tensor,
                       accept_token_num: torch.Tensor, num_nodes: int) -> TreeAcceptResult:
    """SGLang's accept outputs (global node ids) -> local path, lengths and bonus."""
    bs = accept_index.shape[0]
    ai = accept_index.to(torch.int64)
    offs = torch.arange(bs, device=ai.device, dtype=torch.int64)[:, None] * num_nodes
    path = torch.where(ai >= 0, ai - offs, torch.full_like(ai, -1))
    acc = accept_token_num.to(torch.int64)
    last_global = ai.gather(1, acc[:, None]).squeeze(1)
    bonus = predicts.to(torch.int64)[last_global.clamp_min(0)]
    return TreeAcceptResult(path, acc, (acc + 1).to(torch.int32), bonus)


def planted_wrong_residual_bonus(acc: TreeAcceptResult, target_probs: torch.Tensor,
                                 uniforms: torch.Tensor) -> torch.Tensor:
    """The power check's deliberately WRONG tree verifier (``DOMINO_SAMPLED_VERIFY=
    planted-wrong-residual``): the bonus is drawn from the full target distribution p at the
    last accepted node (``target_probs`` [bs, N, V]) by inverse CDF at ``uniforms`` [bs]. At a
    leaf that is the right distribution; after a rejection it is not (the rejected children
    must be removed from p), so a sampled-losslessness test must fail on it."""
    bs = target_probs.shape[0]
    rows = torch.arange(bs, device=target_probs.device)
    last = acc.path.gather(1, acc.accept_len[:, None]).squeeze(1).clamp_min(0)
    cdf = target_probs[rows, last].float().cumsum(-1)
    u = uniforms.reshape(-1, 1).float() * cdf[:, -1:]
    return torch.searchsorted(cdf, u).reshape(-1).clamp(max=target_probs.shape[-1] - 1)


def out_tokens_from_path(tokens: torch.Tensor, path: torch.Tensor, accept_len: torch.Tensor,
                         bonus: torch.Tensor, stride: int) -> torch.Tensor:
    """[bs, stride] int64 ``next_token_ids`` rows: the accepted draft tokens (path minus the
    root), then the bonus, then zeros; ``stride`` = ``speculative_num_draft_tokens`` = N."""
    bs, d = path.shape
    out = torch.zeros(bs, stride, dtype=torch.int64, device=tokens.device)
    k = min(d - 1, stride)
    if k > 0:
        nodes = path[:, 1:1 + k]
        toks = tokens.to(torch.int64).gather(1, nodes.clamp_min(0))
        out[:, :k] = torch.where(nodes >= 0, toks, torch.zeros_like(toks))
    out.scatter_(1, accept_len.to(torch.int64)[:, None], bonus.to(torch.int64)[:, None])
    return out


def commit_permutation(path: torch.Tensor, accept_len: torch.Tensor,
                       num_nodes: int) -> torch.Tensor:
    """[bs, N] int64 permutation of the verify slots: the accepted path (root first) in its
    first ``accept_len + 1`` entries, then every other node in increasing id order.

    Commit without moving KV: ``req_to_token[req, prefix + j] = verify_loc[b, perm[b, j]]``
    for all j < N, so position ``prefix + d`` now names the slot in which the target wrote the
    KV of the path's depth-d node, and the rejected slots stay owned by the request (within
    its reservation) for the next step to overwrite. Needs ``page_size == 1``."""
    bs, d = path.shape
    dev = path.device
    node = torch.arange(num_nodes, device=dev, dtype=torch.int64).expand(bs, num_nodes)
    key = node + d  # non-path nodes after every path slot, in id order
    valid = (torch.arange(d, device=dev)[None, :] <= accept_len[:, None]) & (path >= 0)
    src = torch.where(valid, path, torch.zeros_like(path))
    rank = torch.arange(d, device=dev, dtype=torch.int64).expand(bs, d)
    # invalid entries all write rank 0 onto the root (always path[:, 0] = 0, rank 0), so the
    # duplicate scatter targets agree and the result is deterministic
    key = key.scatter(1, src, torch.where(valid, rank, torch.zeros_like(rank)))
    return key.argsort(dim=1, stable=True)


def permute_verify_locs(verify_loc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """verify_loc [bs, N] (``req_to_token[req, prefix:prefix+N]``) -> the committed order."""
    return verify_loc.gather(1, perm)


def write_req_to_token_rows(req_to_token: torch.Tensor, req_pool_indices: torch.Tensor,
                            seq_lens: torch.Tensor, locs: torch.Tensor) -> None:
    """req_to_token[req_b, seq_len_b + j] = locs[b, j] for j < N (in place, no host sync)."""
    bs, n = locs.shape
    cols = seq_lens.to(torch.int64)[:, None] + torch.arange(n, device=locs.device)[None, :]
    rows = req_pool_indices.to(torch.int64)[:, None].expand(bs, n)
    req_to_token[rows, cols] = locs.to(req_to_token.dtype)


def accepted_kv_moves(verify_loc: torch.Tensor, path: torch.Tensor,
                      accept_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tgt_loc [bs*D], src_loc [bs*D]) for ``KVCache.move_kv_cache`` (the alternative commit
    for page_size > 1): depth d's KV moves from the slot of path node d to ``verify_loc[b, d]``;
    entries beyond the path are self-copies (no-ops). Correct only for a gather-then-scatter
    mover (``move_kv_cache_native``): a parallel in-place copy kernel can race when a path node
    slot is also a target (e.g. path [0, 2, 3])."""
    bs, d = path.shape
    d_eff = min(d, verify_loc.shape[1])
    dep = torch.arange(d_eff, device=path.device)[None, :]
    valid = (dep <= accept_len[:, None]) & (path[:, :d_eff] >= 0)
    tgt = verify_loc[:, :d_eff]
    src = verify_loc.gather(1, torch.where(valid, path[:, :d_eff], dep.expand(bs, d_eff)))
    return tgt.reshape(-1), src.reshape(-1)


def gather_path_rows(hidden: torch.Tensor, path: torch.Tensor, num_nodes: int,
                     width: int) -> torch.Tensor:
    """hidden [bs*N, H] (target verify FULL hidden states, node order) -> [bs*width, H] in path
    order (row d = depth-d node of the accepted path; rows past the path repeat the root and are
    never committed because ``commit_lens`` stops before them). Feeds DFlash's
    ``_append_target_hidden_to_draft_kv_by_loc(cache_loc_2d=committed locs[:, :width])``."""
    bs, d = path.shape
    h = hidden.view(bs, num_nodes, -1)
    idx = torch.zeros(bs, width, dtype=torch.int64, device=hidden.device)
    k = min(d, width)
    idx[:, :k] = path[:, :k].clamp_min(0)
    rows = h.gather(1, idx[:, :, None].expand(bs, width, h.shape[-1]))
    return rows.reshape(bs * width, -1)


def proposal_rows_for_tree(depth: torch.Tensor) -> torch.Tensor:
    """depth [bs, N] -> the draft-block row each node's token was proposed from
    (``depth - 1``; the root's row is -1). The draft forward is width B: its proposal hidden
    state z_{d-1} (block position d) serves every node at depth d."""
    return depth.to(torch.int64) - 1


__all__ = [
    "TreeAcceptResult", "TreeVerifyTensors", "accept_from_sglang", "accepted_kv_moves",
    "alloc_accept_buffers", "build_tree_verify_tensors", "causal_chain_parents",
    "commit_permutation", "full_mask_len", "gather_path_rows", "out_tokens_from_path",
    "permute_verify_locs", "proposal_rows_for_tree", "tree_max_path_nodes",
    "write_req_to_token_rows",
]
