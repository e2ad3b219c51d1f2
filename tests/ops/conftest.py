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


@pytest.fixture
def make_tied_logits():
    """A factory of target logits [B, N, V] whose every row has its maximum at 2-3 indices, equal
    to the bit (the vocabulary spans several BLOCK_V tiles: ties inside a tile, at tile edges and
    tiles apart). Returns (logits, tied) with tied[b][n] the tied indices, lowest first."""
    return _make_tied_logits


def _make_tied_logits(b, n, v, dtype, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, v, generator=g).to(dtype)
    patterns = [(5, v // 2, v - 1), (0, 255, 256), (v // 2 - 1, v // 2), (17, v - 2)]
    tied = []
    for i in range(b):
        tied.append([])
        for j in range(n):
            idx = sorted({min(x, v - 1) for x in patterns[(i + j) % len(patterns)]})
            logits[i, j, idx] = logits[i, j].max() + 1.0  # one value, exactly representable
            tied[i].append(idx)
    return logits, tied
