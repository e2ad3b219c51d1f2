"""The head seam (domino_sglang.sglang_plugin.head) against the reference rollout
(domino_sglang.spec.domino_rollout_ref, greedy). Pure torch: no SGLang needed."""

import sys
import types

import pytest
import torch

from domino_sglang.core.drafter import HeadWeights
from domino_sglang.sglang_plugin.head import (DominoDraftSampler, resolve_head_impl,
                                              torch_domino_head)
from domino_sglang.spec import domino_rollout_ref


def _inputs(bs=4, block=6, d=32, g=16, r=8, v=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s, scale=1.0: torch.randn(*s, generator=gen) * scale  # noqa: E731
    head = HeadWeights(rnd(3 * g, d, scale=0.3), rnd(3 * g, g, scale=0.3),
                       rnd(r, d + g, scale=0.3), rnd(v, r, scale=1.0))
    return (rnd(bs, block, d), torch.randint(0, v, (bs,), generator=gen),
            rnd(v, d, scale=0.3), rnd(v, d), head)


@pytest.mark.parametrize("shift_label", [True, False])
@pytest.mark.parametrize("pure", [0, 1, 3])
@pytest.mark.parametrize("with_head", [True, False])
def test_torch_head_matches_reference(shift_label, pure, with_head):
    hidden, bonus, lm_head, embed, head = _inputs(seed=pure)
    head = head if with_head else None
    ref = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                             pure_prefix_len=pure)
    out = torch.full((hidden.shape[0], hidden.shape[1] - 1), -1, dtype=torch.long)
    torch_domino_head(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                      pure_prefix_len=pure, out=out)
    assert torch.equal(out, ref.tokens)


def test_head_changes_proposals():
    """The correction is not a no-op on these inputs (else the test above proves little)."""
    hidden, bonus, lm_head, embed, head = _inputs()
    a = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=True,
                           pure_prefix_len=0).tokens
    b = domino_rollout_ref(hidden, bonus, lm_head, embed, None, shift_label=True,
                           pure_prefix_len=0).tokens
    assert not torch.equal(a, b)


def test_sampler_flat_layout_and_static_out():
    """The capture-hook contract: hidden [bs*B, D], block input_ids [bs*B] (bonus at ::B),
    proposals in the static out[:bs*(B-1)]; padded rows beyond bs are ignored."""
    hidden, bonus, lm_head, embed, head = _inputs(bs=3, block=5)
    bs, block, d = hidden.shape
    sampler = DominoDraftSampler(lm_head=lm_head, embed=embed, head=head, block_size=block,
                                 shift_label=True, pure_prefix_len=1, max_bs=8)
    out_ptr = sampler.out.data_ptr()
    ids = torch.full((bs, block), 63, dtype=torch.long)
    ids[:, 0] = bonus
    padded_hidden = torch.cat([hidden.reshape(bs * block, d), torch.randn(block, d)])
    padded_ids = torch.cat([ids.flatten(), torch.zeros(block, dtype=torch.long)])
    sampler(padded_hidden[: bs * block], padded_ids[: bs * block])
    ref = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=True,
                             pure_prefix_len=1).tokens
    assert sampler.out.data_ptr() == out_ptr
    assert torch.equal(sampler.out[: bs * (block - 1)].view(bs, block - 1), ref)
    with pytest.raises(RuntimeError, match="max_bs"):
        DominoDraftSampler(lm_head=lm_head, embed=embed, head=head, block_size=block,
                           shift_label=True, pure_prefix_len=1, max_bs=2)(
            hidden.reshape(bs * block, d), ids.flatten())


def test_resolve_head_impl(monkeypatch):
    monkeypatch.setenv("DOMINO_HEAD_IMPL", "torch")
    assert resolve_head_impl()[0] == "torch"
    monkeypatch.setenv("DOMINO_HEAD_IMPL", "auto")
    good = types.ModuleType("domino_sglang.ops.domino_head")
    good.domino_head = torch_domino_head
    monkeypatch.setitem(sys.modules, "domino_sglang.ops.domino_head", good)
    assert resolve_head_impl()[0] == "ops"

    def wrong(hidden, bonus, lm_head, embed, head, *, shift_label, pure_prefix_len, out):
        out.zero_()

    bad = types.ModuleType("domino_sglang.ops.domino_head")
    bad.domino_head = wrong
    monkeypatch.setitem(sys.modules, "domino_sglang.ops.domino_head", bad)
    assert resolve_head_impl()[0] == "torch"  # failed self-check: falls back
    monkeypatch.setenv("DOMINO_HEAD_IMPL", "ops")
    with pytest.raises(ValueError, match="self-check"):
        resolve_head_impl()
