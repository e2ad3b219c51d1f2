"""Op tests: every torch.empty / empty_like made while a test runs is NaN-poisoned (integers get
-7), so an output element a kernel forgets to write fails loudly."""

import pytest
import torch

_empty, _empty_like = torch.empty, torch.empty_like


def _poison(t):
    if t.is_floating_point():
        t.fill_(float("nan"))
    elif t.dtype != torch.bool:
        t.fill_(-7)
    return t


@pytest.fixture(autouse=True)
def _nan_poison(monkeypatch):
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poison(_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _poison(_empty_like(*a, **k)))


@pytest.fixture
def make_head_problem():
    """A factory of random tiny head problems (see _make_head_problem)."""
    return _make_head_problem


def _make_head_problem(batch, block, vocab, dtype, device, *, hidden=32, gru=16, rank=16, seed=0):
    """A random tiny head problem: (hidden [B, K, D], bonus, lm_head, embed, HeadWeights)."""
    from domino_sglang.core.drafter import HeadWeights

    g = torch.Generator().manual_seed(seed)

    def mk(*shape, scale):
        return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)

    head = HeadWeights(mk(3 * gru, hidden, scale=hidden ** -0.5), mk(3 * gru, gru, scale=gru ** -0.5),
                       mk(rank, hidden + gru, scale=(hidden + gru) ** -0.5),
                       mk(vocab, rank, scale=rank ** -0.5 * 2))
    hs = mk(batch, block, hidden, scale=1.0)
    lm_head = mk(vocab, hidden, scale=hidden ** -0.5 * 2)
    embed = mk(vocab, hidden, scale=1.0)
    bonus = torch.randint(0, vocab, (batch,), generator=g).to(device)
    return hs, bonus, lm_head, embed, head
