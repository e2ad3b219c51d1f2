"""Tree verification (greedy, sampled) vs core.verify; chains through ops.chain_verify."""

import pytest
import torch

from domino_sglang.ops.tree_verify import (tree_verify_greedy, tree_verify_greedy_ref,
                                           tree_verify_sample, tree_verify_sample_ref)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TREES = {
    "binary": [-1, 0, 0, 1, 1, 2, 2],
    "wide": [-1, 0, 0, 0, 1, 1, 4],
    "chain": [-1, 0, 1, 2, 3],
    # join order (ops.tree_build.tree_build_best_first_torch): each node after its parent,
    # siblings best first, depths interleaved (node 3, depth 1, after node 2, depth 2)
    "join": [-1, 0, 1, 0, 2, 1, 3, 4],
}


def _fields(res):
    return res.accept_len.cpu(), res.bonus.cpu(), res.accepted_nodes.cpu()


def _assert_same(ref, out):
    for name, r, o in zip(("accept_len", "bonus", "accepted_nodes"), _fields(ref), _fields(out)):
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.parametrize("tree", TREES, ids=str)
@pytest.mark.parametrize("b,v,dtype", [(1, 100, torch.float32), (5, 77, torch.float32),
                                       (3, 50, torch.bfloat16)], ids=lambda x: str(x))
def test_tree_verify_greedy(tree, b, v, dtype):
    g = torch.Generator().manual_seed(0)
    parents = torch.tensor(TREES[tree]).expand(b, -1).contiguous()
    n = parents.shape[1]
    logits = torch.randn(b, n, v, generator=g).to(dtype)
    pred = logits.float().argmax(-1)
    tokens = torch.randint(0, v, (b, n), generator=g)
    for j in range(1, n):  # plant matches so that paths of several lengths are accepted
        plant = torch.rand(b, generator=g) < 0.6
        tokens[:, j] = torch.where(plant, pred.gather(1, parents[:, j:j + 1]).squeeze(1), tokens[:, j])
    ref = tree_verify_greedy_ref(tokens, parents, logits.float())
    out = tree_verify_greedy(tokens.to(DEV), parents.to(DEV), logits.to(DEV), impl="triton")
    _assert_same(ref, out)
    assert ((0 <= out.accept_len.cpu()) & (out.accept_len.cpu() < n)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_tree_verify_greedy_planted_ties(dtype, make_tied_logits):
    """Exactly equal target maxima (in a tile, at tile edges, tiles apart): lowest index wins,
    as in the reference. Siblings carry both the lowest and a higher tied index: the lowest
    must be taken whichever sibling comes first."""
    b, v = 4, 600
    parents = torch.tensor(TREES["binary"]).expand(b, -1).contiguous()
    n = parents.shape[1]
    logits, tied = make_tied_logits(b, n, v, dtype, seed=2)
    tokens = torch.zeros(b, n, dtype=torch.long)
    for i in range(b):
        for j in range(1, n):
            ties = tied[i][int(parents[i, j])]
            first = j % 2 == 1  # the first of two siblings
            tokens[i, j] = ties[-1] if first == (i % 2 == 0) else ties[0]
    tokens[3, 1:] = tokens[3, 1:] + 1  # one row where no child is an argmax
    ref = tree_verify_greedy_ref(tokens, parents, logits.float())
    out = tree_verify_greedy(tokens.to(DEV), parents.to(DEV), logits.to(DEV), impl="triton")
    _assert_same(ref, out)
    assert ref.accept_len.tolist() == [2, 2, 2, 0]
    assert ref.bonus.tolist() == [tied[i][int(ref.accepted_nodes[i, ref.accept_len[i]])][0]
                                  for i in range(b)]


@pytest.mark.parametrize("tree", TREES, ids=str)
@pytest.mark.parametrize("use_q", [False, True], ids=["point", "draft_probs"])
@pytest.mark.parametrize("b,v", [(1, 40), (6, 33)], ids=lambda x: str(x))
def test_tree_verify_sample_same_uniforms(tree, use_q, b, v):
    g = torch.Generator().manual_seed(1)
    parents = torch.tensor(TREES[tree]).expand(b, -1).contiguous()
    n = parents.shape[1]
    target = torch.softmax(torch.randn(b, n, v, generator=g) * 2, -1)
    draft = torch.softmax(torch.randn(b, n, v, generator=g) * 2, -1) if use_q else None
    tokens = torch.randint(0, 4, (b, n), generator=g)  # few distinct tokens: many accepts
    u, uf = torch.rand(b, n, generator=g), torch.rand(b, generator=g)
    ref = tree_verify_sample_ref(tokens, parents, target, draft, u, uf)
    out = tree_verify_sample(tokens.to(DEV), parents.to(DEV), target.to(DEV),
                             draft.to(DEV) if use_q else None, u.to(DEV), uf.to(DEV), impl="triton")
    _assert_same(ref, out)


def test_tree_verify_sample_identical_draft_accepts_all():
    """p == q on a chain: every draft is accepted."""
    b, n, v = 4, 5, 30
    parents = torch.tensor(TREES["chain"]).expand(b, -1).contiguous()
    p = torch.softmax(torch.randn(b, n, v), -1)
    q = torch.cat([p[:, :1], p[:, :-1]], dim=1)  # node j was proposed from its parent's p
    tokens = torch.multinomial(q.reshape(-1, v), 1).view(b, n)
    out = tree_verify_sample(tokens.to(DEV), parents.to(DEV), p.to(DEV), q.to(DEV),
                             torch.rand(b, n, device=DEV) * 0.999, torch.rand(b, device=DEV),
                             impl="triton")
    assert (out.accept_len.cpu() == n - 1).all()


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 16])
def test_tree_verify_gpu_64_nodes(b):
    n, v = 64, 151936
    parents = torch.cat([torch.tensor([-1]), torch.arange(63) // 8]).expand(b, -1).cuda().contiguous()
    logits = torch.randn(b, n, v, device="cuda")
    tokens = torch.randint(0, v, (b, n), device="cuda")
    tokens[:, 1] = logits[:, 0].argmax(-1)
    _assert_same(tree_verify_greedy_ref(tokens.cpu(), parents.cpu(), logits.cpu()),
                 tree_verify_greedy(tokens, parents, logits, impl="triton"))
    probs = torch.softmax(logits, -1)
    u, uf = torch.rand(b, n, device="cuda"), torch.rand(b, device="cuda")
    _assert_same(tree_verify_sample_ref(tokens.cpu(), parents.cpu(), probs.cpu(), None, u.cpu(), uf.cpu()),
                 tree_verify_sample(tokens, parents, probs, None, u, uf, impl="triton"))
