"""Tree building from the head, and the tree attention layout."""

import pytest
import torch

from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target
from domino_sglang.core import (build_tree_ref, domino_rollout_ref, tree_attention_mask,
                                tree_num_nodes, tree_positions)


@pytest.fixture(scope="module")
def pair():
    target = build_tiny_target(vocab_size=64)
    return target, build_tiny_drafter(target, block_size=6, head_scale=20.0)


def _args(pair, b=3):
    target, drafter = pair
    return (torch.randn(b, 6, 64), torch.randint(0, 64, (b,)), target.lm_head.weight,
            target.get_input_embeddings().weight, drafter.head_weights())


@torch.no_grad()
def test_topk1_tree_is_the_greedy_chain(pair):
    args = _args(pair)
    tree = build_tree_ref(*args, shift_label=True, pure_prefix_len=1, topk=1, budget=64)
    chain = domino_rollout_ref(*args, shift_label=True, pure_prefix_len=1)
    assert tree.num_nodes == 6
    assert torch.equal(tree.tokens[:, 1:], chain.tokens)
    assert torch.equal(tree.parents[0], torch.arange(-1, 5))


@pytest.mark.parametrize("topk,budget", [(2, 64), (4, 16), (3, 7)])
@torch.no_grad()
def test_tree_structure(pair, topk, budget):
    args = _args(pair)
    tree = build_tree_ref(*args, shift_label=True, pure_prefix_len=1, topk=topk, budget=budget)
    n = tree_num_nodes(6, topk, budget)
    assert tree.num_nodes == n
    for r in range(3):
        par, dep, tok = tree.parents[r], tree.depth[r], tree.tokens[r]
        assert par[0] == -1 and dep[0] == 0 and tok[0] == args[1][r]
        for j in range(1, n):
            assert 0 <= par[j] < j and dep[j] == dep[par[j]] + 1
            sib = [i for i in range(1, n) if par[i] == par[j]]
            assert len({int(tok[i]) for i in sib}) == len(sib)  # distinct siblings
        assert (torch.bincount(dep, minlength=6)[1:] <= topk).all()
    # depth-1 nodes are the top-k of the base logits (pure prefix): best first
    base1 = args[0][:, 0] @ args[2].t()
    top = base1.topk(topk, dim=-1).indices
    d1 = tree.depth == 1
    assert torch.equal(tree.tokens[d1].view(3, -1), top[:, : int(d1[0].sum())])


def test_mask_and_positions():
    parents = torch.tensor([[-1, 0, 0, 1, 1, 2]])
    mask = tree_attention_mask(parents)[0]
    expected = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0],
                             [1, 1, 0, 1, 0, 0], [1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 0, 1]])
    assert torch.equal(mask, expected.bool())
    depth = torch.tensor([[0, 1, 1, 2, 2, 2]])
    assert tree_positions(depth, torch.tensor([10])).tolist() == [[10, 11, 11, 12, 12, 12]]


def _all_paths(args, r, topk, k1):
    """Every node of the full topk-ary tree to depth k1 with its cumulative log-probability
    (brute force, same head maths): [(cum, path tokens)]."""
    from domino_sglang.core import correction, gru_cell, proposal_hidden

    hidden, bonus, lm, embed, head = args
    z = proposal_hidden(hidden, True).float()
    out = []

    def walk(path, s, cum, i):
        if i >= k1:
            return
        li = z[r:r + 1, i] @ lm.float().t()
        if i >= 1:  # pure_prefix_len 1
            li = li + correction(z[r:r + 1, i], s, head)
        logp = torch.log_softmax(li[0], dim=-1)
        order = torch.sort(logp, descending=True, stable=True).indices[:topk]
        for t in order.tolist():
            c = cum + float(logp[t])
            out.append((c, path + [t]))
            walk(path + [t], gru_cell(embed[t:t + 1], s, head.w_ih, head.w_hh), c, i + 1)

    s0 = gru_cell(embed[bonus[r:r + 1]], torch.zeros(1, head.gru_dim), head.w_ih, head.w_hh)
    walk([], s0, 0.0, 0)
    return out


@pytest.mark.parametrize("topk,budget", [(2, 9), (3, 12), (1, 64)])
@torch.no_grad()
def test_best_first_tree_takes_the_most_probable_paths(pair, topk, budget):
    from domino_sglang.core import build_tree_best_first_ref

    args = _args(pair)
    tree = build_tree_best_first_ref(*args, shift_label=True, pure_prefix_len=1, topk=topk,
                                     budget=budget)
    k1 = 5
    n = min(budget, 1 + sum(topk ** d for d in range(1, k1 + 1)))
    assert tree.num_nodes == n
    for r in range(3):
        par, dep, tok = tree.parents[r].tolist(), tree.depth[r].tolist(), tree.tokens[r].tolist()
        assert par[0] == -1 and dep[0] == 0 and tok[0] == int(args[1][r])
        paths = [[]]
        for j in range(1, n):
            assert 0 <= par[j] < j and dep[j] == dep[par[j]] + 1 <= k1
            paths.append(paths[par[j]] + [tok[j]])
        assert all(sum(p == j for p in par) <= topk for j in range(n))
        every = sorted(_all_paths(args, r, topk, k1), key=lambda x: -x[0])
        cutoff = every[n - 2][0]  # the (n-1)-th most probable path
        got = {tuple(p) for p in paths[1:]}
        assert all(c >= cutoff - 1e-5 for c, p in every if tuple(p) in got)
        assert all(tuple(p) in got for c, p in every if c > cutoff + 1e-5)
    if topk == 1:  # best first with one child per node is the greedy chain
        chain = domino_rollout_ref(*args, shift_label=True, pure_prefix_len=1)
        assert torch.equal(tree.tokens[:, 1:], chain.tokens)
