"""The own sampled verification (DOMINO_SAMPLED_VERIFY=domino, the default): lossless, and hooked into
DFlash's worker only when asked for."""

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from domino_sglang.sglang_plugin.sampled_verify import (domino_sampled_accept,
                                                        planted_wrong_residual_accept,
                                                        sampled_verify_choice, target_probs)


def _info(temps, top_ks, top_ps, min_ps=None):
    return types.SimpleNamespace(temperatures=torch.tensor(temps).view(-1, 1),
                                 top_ks=torch.tensor(top_ks), top_ps=torch.tensor(top_ps),
                                 min_ps=None if min_ps is None else torch.tensor(min_ps),
                                 need_min_p_sampling=min_ps is not None)


def test_choice_parsing():
    assert sampled_verify_choice({}) == "domino"
    assert sampled_verify_choice({"DOMINO_SAMPLED_VERIFY": "sglang"}) == "sglang"
    assert sampled_verify_choice({"DOMINO_SAMPLED_VERIFY": "Domino"}) == "domino"
    assert sampled_verify_choice({"DOMINO_SAMPLED_VERIFY": "planted-wrong-residual"}) == \
        "planted-wrong-residual"
    with pytest.raises(ValueError, match="DOMINO_SAMPLED_VERIFY='x'"):
        sampled_verify_choice({"DOMINO_SAMPLED_VERIFY": "x"})


def test_target_probs_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(3, 1)  # bs 3, block 1
    p = target_probs(logits, _info([1.0, 1.0, 1.0], [1 << 30, 2, 1 << 30], [1.0, 1.0, 1.0],
                                   [0.0, 0.0, 0.25]), 3, 1)
    torch.testing.assert_close(p[0, 0], torch.tensor([0.5, 0.3, 0.15, 0.05]))
    torch.testing.assert_close(p[1, 0], torch.tensor([0.625, 0.375, 0.0, 0.0]))
    torch.testing.assert_close(p[2, 0], torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)


def test_first_emitted_token_follows_the_target():
    """Point-mass drafts at every position; the first emitted token must be ~ p(position 0)."""
    vocab, block, n = 5, 4, 20000
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(block, vocab, generator=gen) * 1.5
    cands = torch.tensor([[0, 2, 1, 3]]).repeat(n, 1)  # bonus, then three drafts
    accept, bonus = domino_sampled_accept(
        candidates=cands, next_token_logits=logits.repeat(n, 1),
        sampling_info=_info([1.0] * n, [1 << 30] * n, [1.0] * n),
        uniform_samples=torch.rand(n, block, generator=gen),
        uniform_samples_for_final_sampling=torch.rand(n, generator=gen), threshold_single=0.5)
    first = torch.where(accept > 0, cands[:, 1], bonus)
    freq = torch.bincount(first, minlength=vocab).float() / n
    p0 = torch.softmax(logits[0], -1)
    assert (freq - p0).abs().max() < 0.015, (freq, p0)
    assert 0 < (accept > 0).float().mean() < 1  # both branches were exercised


def test_planted_wrong_residual_is_wrong_exactly_where_expected():
    """The power-check verifier: same acceptance, but after a rejection the rejected draft can
    come back (drawn from p, not from p without it); its frequency at position 0 is then
    p(x) + (1 - p(x)) p(x). The correct verifier on the same coins gives p(x)."""
    vocab, block, n = 5, 4, 20000
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(block, vocab, generator=gen)
    cands = torch.tensor([[0, 2, 1, 3]]).repeat(n, 1)
    kw = dict(candidates=cands, next_token_logits=logits.repeat(n, 1),
              sampling_info=_info([1.0] * n, [1 << 30] * n, [1.0] * n),
              uniform_samples=torch.rand(n, block, generator=gen),
              uniform_samples_for_final_sampling=torch.rand(n, generator=gen))
    p0 = torch.softmax(logits[0], -1)
    good_acc, good_bonus = domino_sampled_accept(**kw)
    bad_acc, bad_bonus = planted_wrong_residual_accept(**kw)
    assert torch.equal(good_acc, bad_acc)
    full = good_acc == block - 1
    assert torch.equal(good_bonus[full], bad_bonus[full])  # no rejection: same bonus
    for acc, bonus, want in ((good_acc, good_bonus, p0[2]),
                             (bad_acc, bad_bonus, p0[2] + (1 - p0[2]) * p0[2])):
        first = torch.where(acc > 0, cands[:, 1], bonus)
        assert abs((first == 2).float().mean() - want) < 0.015


def test_planted_with_sampled_drafts_draws_the_replacement_from_q():
    """With sampled drafts (draft_probs = q) the plant draws the token after a rejection from q
    instead of the residual max(p - q, 0): position 0 then emits min(p, q) + TV q, not p (the
    correct verifier on the same coins)."""
    vocab, block, n = 4, 2, 40000
    gen = torch.Generator().manual_seed(2)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.2, 0.5])
    cands = torch.stack([torch.zeros(n, dtype=torch.long),
                         torch.multinomial(q, n, replacement=True, generator=gen)], 1)
    kw = dict(candidates=cands, next_token_logits=p.log().repeat(n * block, 1),
              sampling_info=_info([1.0] * n, [1 << 30] * n, [1.0] * n),
              uniform_samples=torch.rand(n, block, generator=gen),
              uniform_samples_for_final_sampling=torch.rand(n, generator=gen),
              draft_probs=q.view(1, 1, vocab).repeat(n, 1, 1))
    m = torch.minimum(p, q)
    for fn, want in ((domino_sampled_accept, p),
                     (planted_wrong_residual_accept, m + (1 - m.sum()) * q)):
        acc, bonus = fn(**kw)
        first = torch.where(acc > 0, cands[:, 1], bonus)
        freq = torch.bincount(first, minlength=vocab).float() / n
        assert (freq - want).abs().max() < 0.012, (fn.__name__, freq, want)
    assert ((m + (1 - m.sum()) * q) - p).abs().max() > 0.1  # the two are far apart


@pytest.mark.sglang
def test_hook_replaces_dflash_sampled_verify_only_when_asked(tmp_path):
    here = Path(__file__).parent
    code = f"""
import sys; sys.path.insert(0, {str(here)!r}); import _tv_mock; _tv_mock.install()
from sglang.srt.speculative import dflash_worker_v2 as w
before = [w.compute_dflash_sampling_correct_drafts_and_bonus]  # a global would be re-bound too
from domino_sglang.sglang_plugin.sampled_verify import install_sampled_verify_hooks
install_sampled_verify_hooks(); install_sampled_verify_hooks()
after = w.compute_dflash_sampling_correct_drafts_and_bonus
assert after is not before[0] and after.__wrapped__ is before[0]
assert w.is_dflash_sampling_verify_available()
import types, torch
info = types.SimpleNamespace(temperatures=torch.ones(1, 1), top_ks=torch.tensor([1 << 30]),
                             top_ps=torch.ones(1), min_ps=None)
# p puts all mass on token 1 at position 0: a draft of 1 is accepted, then the bonus follows p[1]
logits = torch.tensor([[-1e4, 0.0, -1e4], [-1e4, -1e4, 0.0]])
acc, bonus = after(candidates=torch.tensor([[0, 1]]), next_token_logits=logits,
                   sampling_info=info, max_top_k=1, uniform_top_k_value=None)
assert acc.tolist() == [1] and bonus.tolist() == [2], (acc, bonus)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("width", [1, 2])
def test_narrow_widths_follow_the_target(width):
    """The adaptive server verifies ``width`` < B tokens (adaptive.narrow_round): width 1 is a
    plain sampled step (no drafts), width 2 one draft. The emitted token must be ~ p(position 0)
    either way, and nothing is accepted at width 1."""
    vocab, n = 5, 20000
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(width, vocab, generator=gen) * 1.5
    cands = torch.tensor([[0, 2, 1, 3][:width]]).repeat(n, 1)
    for fn in (domino_sampled_accept, planted_wrong_residual_accept):
        accept, bonus = fn(candidates=cands, next_token_logits=logits.repeat(n, 1),
                           sampling_info=_info([1.0] * n, [1 << 30] * n, [1.0] * n),
                           uniform_samples=torch.rand(n, width, generator=gen),
                           uniform_samples_for_final_sampling=torch.rand(n, generator=gen))
        first = torch.where(accept > 0, cands[:, min(1, width - 1)], bonus)
        freq = torch.bincount(first, minlength=vocab).float() / n
        err = (freq - torch.softmax(logits[0], -1)).abs().max()
        if width == 1:
            assert (accept == 0).all() and err < 0.015, (fn.__name__, err)
        elif fn is domino_sampled_accept:
            assert err < 0.015 and 0 < (accept > 0).float().mean() < 1
        else:  # the planted bug stays visible at width 2: draft 2's mass is inflated
            assert err > 0.03, err
