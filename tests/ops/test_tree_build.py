"""Tree building and SGLang tree layout vs core.tree (build_tree_ref, tree_attention_mask)."""

import pytest
import torch

from domino_sglang.ops.tree_build import tree_build, tree_build_ref, tree_layout, tree_layout_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"

CASES = [  # (B, K, V, dtype, topk, budget)
    (1, 4, 100, torch.float32, 3, 64),
    (3, 5, 77, torch.float32, 2, 6),
    (3, 4, 60, torch.bfloat16, 4, 64),
    (2, 8, 40, torch.float32, 1, 64),  # a chain
]


def _cpu(head):
    from domino_sglang.core.drafter import HeadWeights

    return HeadWeights(*(t.cpu() for t in (head.w_ih, head.w_hh, head.w1, head.w2)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-K{c[1]}-V{c[2]}-{str(c[3])[6:]}-top{c[4]}-n{c[5]}")
def test_tree_build(case, make_head_problem):
    b, k, v, dtype, topk, budget = case
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, dtype, DEV)
    ref = tree_build_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head), shift_label=True,
                         pure_prefix_len=1, topk=topk, budget=budget)
    out = tree_build(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=topk,
                     budget=budget, impl="triton")
    for name in ("tokens", "parents", "depth"):
        r, o = getattr(ref, name), getattr(out, name).cpu()
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.parametrize("parents,seq_lens", [
    ([[-1, 0, 0, 1, 1, 2, 3]], [5]),
    ([[-1, 0, 1, 2], [-1, 0, 0, 0]], [0, 300]),  # a chain and a star; a long prefix
], ids=["tree", "chain+star"])
def test_tree_layout(parents, seq_lens):
    parents, seq_lens = torch.tensor(parents, device=DEV), torch.tensor(seq_lens, device=DEV)
    ref = tree_layout_ref(parents, seq_lens)
    out = tree_layout(parents, seq_lens, impl="triton")
    for name, r, o in zip(("mask", "positions", "retrieve", "next_token", "next_sibling"), ref, out):
        assert torch.equal(r, o.cpu()), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 5])
def test_tree_build_gpu_64_nodes(b, make_head_problem):
    hs, bonus, lm, emb, head = make_head_problem(b, 16, 32000, torch.bfloat16, "cuda", hidden=512,
                                                 gru=128, rank=64)
    ref = tree_build_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=8,
                         budget=64)
    out = tree_build(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=8,
                     budget=64, impl="triton")
    assert torch.equal(ref.parents, out.parents) and torch.equal(ref.tokens, out.tokens)
