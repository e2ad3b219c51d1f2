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
