"""Chain verification (the path-shaped tree through the tree walk kernel) vs core / spec refs."""

import pytest
import torch

from domino_sglang.ops.chain_verify import (chain_verify_greedy, chain_verify_greedy_ref,
                                            chain_verify_sample, chain_verify_sample_ref)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("b,k,v,dtype", [(1, 4, 100, torch.float32), (5, 8, 77, torch.float32),
                                         (3, 16, 50, torch.bfloat16)], ids=lambda x: str(x))
def test_chain_verify_greedy(b, k, v, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, k, v, generator=g).to(dtype)
    pred = logits.float().argmax(-1)
    draft = torch.where(torch.rand(b, k - 1, generator=g) < 0.8, pred[:, :-1],
                        torch.randint(0, v, (b, k - 1), generator=g))
    ref = chain_verify_greedy_ref(draft, logits.float())
    out = chain_verify_greedy(draft.to(DEV), logits.to(DEV), impl="triton")
    for name, r, o in zip(("accept_len", "bonus"), ref, out):
        assert torch.equal(r, o.cpu()), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.parametrize("use_q", [False, True], ids=["point", "draft_probs"])
@pytest.mark.parametrize("b,k,v", [(1, 4, 40), (6, 8, 33)], ids=lambda x: str(x))
def test_chain_verify_sample_same_uniforms(use_q, b, k, v):
    g = torch.Generator().manual_seed(2)
    target = torch.softmax(torch.randn(b, k, v, generator=g), -1)
    draft_probs = torch.softmax(torch.randn(b, k - 1, v, generator=g), -1) if use_q else None
    draft = torch.randint(0, 3, (b, k - 1), generator=g)
    bonus = torch.randint(0, v, (b,), generator=g)
    u, uf = torch.rand(b, k - 1, generator=g), torch.rand(b, generator=g)
    ref = chain_verify_sample_ref(draft, bonus, target, draft_probs, u, uf)
    out = chain_verify_sample(draft.to(DEV), bonus.to(DEV), target.to(DEV),
                              draft_probs.to(DEV) if use_q else None, u.to(DEV), uf.to(DEV),
                              impl="triton")
    for name in ("accept_len", "bonus", "accepted_nodes"):
        r, o = getattr(ref, name), getattr(out, name).cpu()
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_chain_verify_greedy_planted_ties(dtype, make_tied_logits):
    """Exactly equal target maxima (in a tile, at tile edges, tiles apart): the argmax is the
    lowest index, as in the reference. Drafts alternate between the lowest tied index (must be
    accepted) and a higher one (must be rejected, the bonus being the lowest index)."""
    b, k, v = 4, 6, 600
    logits, tied = make_tied_logits(b, k, v, dtype, seed=1)
    draft = torch.tensor([[tied[i][j][0] if (i + j) % 3 else tied[i][j][-1] for j in range(k - 1)]
                          for i in range(b)])
    ref = chain_verify_greedy_ref(draft, logits.float())
    out = chain_verify_greedy(draft.to(DEV), logits.to(DEV), impl="triton")
    for name, r, o in zip(("accept_len", "bonus"), ref, out):
        assert torch.equal(r, o.cpu()), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"
    acc = ref[0]
    assert torch.equal(ref[1], torch.tensor([tied[i][int(acc[i])][0] for i in range(b)]))
    assert 0 < int(acc.sum()) < b * (k - 1)  # both a planted accept and a planted reject


def _cuts(probs, delta):
    """The inner breakpoints of the CDF of probs, at least 2 delta apart from 0, 1 and each
    other (a zero-probability token adds no breakpoint)."""
    cuts = []
    for c in torch.cumsum(probs, 0)[:-1].tolist():
        if 2 * delta < c < 1 - 2 * delta and all(abs(c - x) > 2 * delta for x in cuts):
            cuts.append(c)
    return cuts


def _boundary_rows(p, q, p_next, delta=1e-3):
    """Inputs of a one-draft chain (K = 2) that sit just either side of every decision of exact
    rejection sampling: for each draft token d, the coin at its threshold min(1, p/q) x (1 -/+
    delta); for a rejected draft, the final uniform either side of every breakpoint of the
    residual's CDF (normalised (p - q)+); for an accepted one, of p_next's CDF."""
    resid = torch.clamp(p - q, min=0)
    resid = resid / resid.sum()
    rows = []  # (d, u, uf)
    for d in range(p.shape[0]):
        thr = min(1.0, float(p[d] / q[d]))
        if thr < 1:
            for cut in _cuts(resid, delta):
                rows += [(d, thr * (1 + delta), cut + s * delta) for s in (-1, 1)]
        for cut in _cuts(p_next, delta):
            rows += [(d, thr * (1 - delta), cut + s * delta) for s in (-1, 1)]
    return rows


def test_chain_sampled_decisions_equal_the_reference_at_every_boundary():
    """Lossless sampled acceptance, exactly: the kernel makes the reference's decision (accept
    or not, which bonus) just below and just above every acceptance threshold and every
    breakpoint of the residual's and the next position's CDF. Between boundaries both are
    constant, so the kernel's output distribution is the reference's, whose losslessness is
    tested with power in tests/core/test_verify.py (a wrong residual fails there)."""
    v = 5
    g = torch.Generator().manual_seed(4)
    p = torch.softmax(torch.randn(2, v, generator=g) * 1.5, -1)
    q = torch.softmax(torch.randn(v, generator=g) * 1.5, -1)
    assert ((p[0] < q).any() and (p[0] > q).any())  # both kinds of threshold occur
    rows = _boundary_rows(p[0].double(), q.double(), p[1].double())
    b = len(rows)
    draft = torch.tensor([[d] for d, _, _ in rows])
    u = torch.tensor([[x] for _, x, _ in rows], dtype=torch.float32)
    uf = torch.tensor([x for *_, x in rows], dtype=torch.float32)
    target, qs = p.expand(b, 2, v).contiguous(), q.expand(b, 1, v).contiguous()
    bonus_in = torch.zeros(b, dtype=torch.long)
    ref = chain_verify_sample_ref(draft, bonus_in, target, qs, u, uf)
    out = chain_verify_sample(draft.to(DEV), bonus_in.to(DEV), target.to(DEV), qs.to(DEV),
                              u.to(DEV), uf.to(DEV), impl="triton")
    for name in ("accept_len", "bonus"):
        r, o = getattr(ref, name), getattr(out, name).cpu()
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"
    # each pair of rows straddles a boundary: the decision does change across it
    pairs = torch.stack([ref.accept_len * v + ref.bonus]).view(-1, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all(), pairs.tolist()
    assert set(ref.accept_len.tolist()) == {0, 1}
