"""Sampling conventions: temperature, top-k, top-p and inverse-CDF sampling."""

import pytest
import torch

from domino_sglang.core import SamplingParams, logits_to_probs, sample_from_probs


def test_temperature_zero_is_argmax_lowest_index():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    p = logits_to_probs(logits, SamplingParams.make(1, 0.0))
    assert torch.equal(p, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def test_top_k_keeps_ties_and_top_p_keeps_smallest_prefix():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    p = logits_to_probs(logits, SamplingParams.make(1, 1.0, top_k=2))
    torch.testing.assert_close(p, torch.tensor([[4 / 7, 3 / 7, 0.0, 0.0]]))
    p = logits_to_probs(logits, SamplingParams.make(1, 1.0, top_p=0.65))  # 0.4+0.3 reaches it
    torch.testing.assert_close(p, torch.tensor([[4 / 7, 3 / 7, 0.0, 0.0]]))
    p = logits_to_probs(logits, SamplingParams.make(1, 1.0, top_p=0.75))
    torch.testing.assert_close(p, torch.tensor([[4 / 9, 3 / 9, 2 / 9, 0.0]]))
    tie = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    assert (logits_to_probs(tie, SamplingParams.make(1, 1.0, top_k=2)) > 0).sum() == 3
    p = logits_to_probs(torch.tensor([[0.0, 1.0]]), SamplingParams.make(1, 2.0))
    torch.testing.assert_close(p, torch.softmax(torch.tensor([[0.0, 0.5]]), -1))


def test_inverse_cdf_sampling_follows_probs():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    assert sample_from_probs(probs, torch.tensor(0.0)) == 0
    assert sample_from_probs(probs, torch.tensor(0.0999)) == 0
    assert sample_from_probs(probs, torch.tensor(0.1001)) == 2
    assert sample_from_probs(probs, torch.tensor(0.9999999)) == 3
    u = torch.rand(200_000)
    counts = torch.bincount(sample_from_probs(probs.expand(len(u), -1), u), minlength=4)
    torch.testing.assert_close(counts / len(u), probs, atol=5e-3, rtol=0)


@pytest.mark.parametrize("temps,ks,ps", [
    ([1.0, 0.7, 0.0], [0, 0, 0], [1.0, 1.0, 1.0]),     # no row truncates: both sorts skipped
    ([1.0, 0.7, 0.0], [0, 5, 0], [1.0, 1.0, 1.0]),     # one row uses top-k
    ([1.0, 0.7, 0.0], [0, 0, 0], [1.0, 0.8, 1.0]),     # one row uses top-p
    ([1.3, 0.7, 1.0], [3, 0, 64], [0.5, 1.0, 0.9]),    # both, mixed (k >= V is off)
])
def test_skipping_unused_sorts_is_bit_identical(temps, ks, ps):
    from domino_sglang.core.sampling import _logits_to_probs

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 64, generator=g) * 4
    logits[:, :, 7] = logits[:, :, 3]  # value ties
    params = SamplingParams(torch.tensor(temps), torch.tensor(ks), torch.tensor(ps))
    fast = _logits_to_probs(logits, params, skip_unused=True)
    full = _logits_to_probs(logits, params, skip_unused=False)
    assert torch.equal(fast, full)
    assert torch.equal(logits_to_probs(logits, params), fast)  # the CPU default skips
