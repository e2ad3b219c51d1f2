"""Sampled drafting for sampled requests (DOMINO_SAMPLED_DRAFTS=1): drafts drawn from the head's
own distribution q, verified with that q. Lossless at drafted positions (not only the first
token), more drafts accepted than when the same drafts are verified as point masses (also
lossless: a point-mass verify is exact for any draft), and wrong when the verify is given a q
the drafts were not drawn from (the planted check that the test can fail). CPU: the reference
rollout stands in for the Triton head (tests/ops cover their agreement)."""

import types

import pytest
import torch

from domino_sglang.sglang_plugin.sampled_draft import (SampledDrafter, draft_sampling_params,
                                                       wants_sampled_drafts)
from domino_sglang.sglang_plugin.sampled_verify import domino_sampled_accept

VOCAB, BLOCK, D = 6, 4, 8


def _info(n, temp=1.0, top_k=1 << 30, top_p=1.0, greedy_rows=()):
    temps = torch.full((n, 1), float(temp))
    top_ks = torch.full((n,), int(top_k))
    for r in greedy_rows:
        top_ks[r] = 1
    return types.SimpleNamespace(temperatures=temps, top_ks=top_ks,
                                 top_ps=torch.full((n,), float(top_p)), min_ps=None,
                                 need_min_p_sampling=False,
                                 is_all_greedy=len(greedy_rows) == n)


@pytest.fixture(scope="module")
def weights():
    from domino_sglang.core.drafter import HeadWeights

    g = torch.Generator().manual_seed(3)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    gru, rank = 5, 3
    head = HeadWeights(w_ih=rnd(3 * gru, D) * 0.5, w_hh=rnd(3 * gru, gru) * 0.5,
                       w1=rnd(rank, D + gru) * 0.5, w2=rnd(VOCAB, rank) * 0.8)
    return rnd(VOCAB, D) * 0.7, rnd(VOCAB, D), head  # lm_head, embed, head


def _drafter(weights):
    lm_head, embed, head = weights
    return SampledDrafter(lm_head, embed, head, block_size=BLOCK, shift_label=True,
                          pure_prefix_len=1, impl="ref")


def test_drafts_are_draws_from_the_returned_q(weights):
    from domino_sglang.core.rollout import domino_rollout_ref

    lm_head, embed, head = weights
    g = torch.Generator().manual_seed(0)
    n = 6
    hidden = torch.randn(n, BLOCK, D, generator=g)
    bonus = torch.randint(0, VOCAB, (n,), generator=g)
    info = _info(n, greedy_rows=(0, 3))
    assert wants_sampled_drafts(info) and not wants_sampled_drafts(_info(2, greedy_rows=(0, 1)))
    assert not wants_sampled_drafts(None)
    tokens, q = _drafter(weights)(hidden, bonus, draft_sampling_params(info, n), generator=g)
    assert tokens.shape == (n, BLOCK - 1) and tokens.dtype == torch.int64
    assert q.shape == (n, BLOCK - 1, VOCAB)
    torch.testing.assert_close(q.sum(-1), torch.ones(n, BLOCK - 1))
    assert (q.gather(-1, tokens[..., None]) > 0).all()
    # greedy rows (top-k 1): point masses on the greedy rollout's tokens
    greedy = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=True,
                                pure_prefix_len=1).tokens
    for r in (0, 3):
        assert torch.equal(tokens[r], greedy[r])
        assert torch.equal(q[r].argmax(-1), greedy[r]) and (q[r].max(-1).values == 1).all()


def _emitted(weights, n, q_mode="same", seed=0):
    """One round for n copies of one request: sampled drafts, then the verify. Returns the
    first two emitted tokens (-1 where the round emitted only one), the accept lengths and the
    target distributions at positions 0 and 1 (given the bonus, then given draft 1)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, BLOCK, D, generator=g).repeat(n, 1, 1)
    bonus = torch.full((n,), 2, dtype=torch.int64)
    info = _info(n)
    tokens, q = _drafter(weights)(hidden, bonus, draft_sampling_params(info, n), generator=g)
    # the target: position j's logits depend on the tokens before it (bonus, drafts 1..j)
    tgt = torch.randn(BLOCK, VOCAB, VOCAB, generator=g) * 1.5
    cands = torch.cat([bonus[:, None], tokens], 1)
    logits = torch.stack([tgt[j][cands[:, j]] for j in range(BLOCK)], 1)  # [n, BLOCK, V]
    accept, bonus_out = domino_sampled_accept(
        candidates=cands, next_token_logits=logits.reshape(n * BLOCK, VOCAB),
        sampling_info=info, uniform_samples=torch.rand(n, BLOCK, generator=g),
        uniform_samples_for_final_sampling=torch.rand(n, generator=g),
        draft_probs={"same": q, "none": None,
                     "other": torch.softmax(torch.log(q.clamp_min(1e-30)) / 2.0, -1)}[q_mode])
    first = torch.where(accept > 0, cands[:, 1], bonus_out)
    second = torch.where(accept > 1, cands[:, 2], torch.where(accept == 1, bonus_out, -1))
    return first, second, accept, tgt


def test_sampled_drafts_follow_the_target_at_drafted_positions(weights):
    """The first emitted token ~ p(. | bonus); the second, among rounds that accepted draft 1 =
    x, ~ p(. | bonus, x): exact at both positions, with q in the verify."""
    n = 30000
    first, second, accept, tgt = _emitted(weights, n)
    p0 = torch.softmax(tgt[0][2], -1)
    freq = torch.bincount(first, minlength=VOCAB).float() / n
    assert (freq - p0).abs().max() < 0.012, (freq, p0)
    x = int(torch.mode(first[accept > 0]).values)
    rows = (accept > 0) & (first == x)
    assert rows.sum() > 3000
    p1 = torch.softmax(tgt[1][x], -1)
    freq1 = torch.bincount(second[rows], minlength=VOCAB).float() / rows.sum()
    assert (freq1 - p1).abs().max() < 0.03, (freq1, p1)
    assert 0 < (accept > 0).float().mean() < 1


def test_a_wrong_q_is_caught_and_the_right_q_accepts_more(weights):
    """The planted bug: the verify is given q at another temperature than the drafts were drawn
    at; the first token's distribution is then visibly wrong (the check above can fail). The same
    drafts verified as point masses stay exact but accept less than with their q: the point of
    sampled drafting (sum min(p, q) >= sum p q)."""
    n = 30000
    first, _, _, tgt = _emitted(weights, n, q_mode="other")
    p0 = torch.softmax(tgt[0][2], -1)
    freq = torch.bincount(first, minlength=VOCAB).float() / n
    assert (freq - p0).abs().max() > 0.03, (freq, p0)
    first_pm, _, acc_pm, _ = _emitted(weights, n, q_mode="none")
    freq_pm = torch.bincount(first_pm, minlength=VOCAB).float() / n
    assert (freq_pm - p0).abs().max() < 0.012
    _, _, acc_q, _ = _emitted(weights, n)
    assert acc_q.float().mean() > acc_pm.float().mean() + 0.05, (acc_q.float().mean(),
                                                                 acc_pm.float().mean())


def test_draft_probs_shape_is_checked():
    with pytest.raises(ValueError, match="draft_probs"):
        domino_sampled_accept(candidates=torch.zeros(2, 4, dtype=torch.long),
                              next_token_logits=torch.zeros(8, 5), sampling_info=_info(2),
                              draft_probs=torch.full((2, 2, 5), 0.2))
