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


@pytest.mark.sglang
def test_worker_draft_block_samples_from_the_draft_hidden_states(weights, monkeypatch):
    """DominoWorkerV2._domino_draft_block with DOMINO_SAMPLED_DRAFTS=1: a batch with a sampled
    request takes the drafts from the sampled drafter on the draft forward's full hidden states
    (bonus = the block's first id) and keeps q for the verify; a greedy batch keeps the draft
    graph's head output and no q; missing hidden states are a clear error."""
    from domino_sglang.sglang_plugin import worker as wmod
    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    lm_head, embed, head = weights
    bs, mask = 3, VOCAB - 1
    monkeypatch.setattr(wmod, "assign_extend_cache_locs_func", lambda **kw: torch.zeros(
        kw["batch_size"] * kw["draft_token_num"], dtype=torch.int64))
    hidden = torch.randn(bs * BLOCK, D, generator=torch.Generator().manual_seed(5))
    graph_out = torch.full((8 * (BLOCK - 1),), 4, dtype=torch.int64)
    w = DominoWorkerV2.__new__(DominoWorkerV2)

    def draft_forward(batch, block_ids, positions_2d, loc_2d):
        w._domino_last_hidden = hidden
        return types.SimpleNamespace(can_run_graph=True, logits_output=None)

    w.__dict__.update(
        block_size=BLOCK, device=torch.device("cpu"), _use_triton_prepare_block=False,
        _mask_token_id=mask, _block_pos_offsets=torch.arange(BLOCK),
        _draft_block_ids_buf=torch.zeros(8, BLOCK, dtype=torch.int64),
        _draft_block_positions_buf=torch.zeros(8, BLOCK, dtype=torch.int64),
        _draft_verify_out_cache_loc_buf=torch.zeros(8, BLOCK, dtype=torch.int64),
        _ensure_draft_block_buffers=lambda n: None, _domino_draft_forward=draft_forward,
        _draft_sampler=types.SimpleNamespace(out=graph_out), _domino_draft_q=None,
        model_runner=types.SimpleNamespace(req_to_token_pool=types.SimpleNamespace(
            req_to_token=torch.zeros(4, 64, dtype=torch.int32))),
        domino_config=types.SimpleNamespace(sampled_drafts=True),
        _domino_sampled_drafter=SampledDrafter(lm_head, embed, head, block_size=BLOCK,
                                               shift_label=True, pure_prefix_len=1, impl="ref"),
        ps=types.SimpleNamespace(tp_rank=0))
    bonus = torch.tensor([1, 2, 3])

    def batch(info):
        return types.SimpleNamespace(seq_lens=torch.tensor([5, 6, 7]), sampling_info=info,
                                     req_pool_indices=torch.tensor([0, 1, 2]),
                                     spec_info=types.SimpleNamespace(bonus_tokens=bonus))

    torch.manual_seed(0)
    block_ids, _, _, drafts = w._domino_draft_block(batch(_info(bs)))
    assert block_ids[:, 0].tolist() == bonus.tolist() and (block_ids[:, 1:] == mask).all()
    q = w._domino_draft_q
    assert q.shape == (bs, BLOCK - 1, VOCAB) and drafts.shape == (bs, BLOCK - 1)
    assert (q.gather(-1, drafts[..., None]) > 0).all()
    torch.manual_seed(0)  # the same uniforms: the same draws from the same hidden states
    want, want_q = w._domino_sampled_drafter(hidden.view(bs, BLOCK, D), bonus,
                                             draft_sampling_params(_info(bs), bs))
    assert torch.equal(drafts, want) and torch.equal(q, want_q)
    # greedy batch: the graph's head output, no q
    _, _, _, drafts = w._domino_draft_block(batch(_info(bs, greedy_rows=(0, 1, 2))))
    assert (drafts == 4).all() and w._domino_draft_q is None
    w._domino_last_hidden = None
    w._domino_draft_forward = lambda *a: types.SimpleNamespace(can_run_graph=True)
    with pytest.raises(RuntimeError, match="no draft hidden states"):
        w._domino_draft_block(batch(_info(bs)))


@pytest.mark.sglang
def test_worker_turns_sampled_drafts_off_where_narrow_rounds_cannot_run(caplog):
    import logging

    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    for attrs, on in (({}, True), ({"use_compact_draft_cache": True}, False),
                      ({"_need_mamba_verify_commit": True}, False)):
        w = DominoWorkerV2.__new__(DominoWorkerV2)
        w.__dict__.update(domino_config=types.SimpleNamespace(sampled_drafts=True),
                          ps=types.SimpleNamespace(tp_rank=0), **attrs)
        with caplog.at_level(logging.INFO, logger="domino_sglang.sglang_plugin.worker"):
            w._domino_init_sampled_drafts()
        assert w._domino_sampled_drafts_on is on
        assert w._domino_sampled_round(types.SimpleNamespace(
            sampling_info=_info(2))) is on
    assert any("sampled drafts OFF" in r.message for r in caplog.records)


@pytest.mark.parametrize("with_head", [True, False], ids=["domino", "head-off"])
def test_triton_drafter_matches_the_reference(weights, with_head):
    """impl="triton" (the fused head; Triton's interpreter on a CPU) draws the same tokens with
    the same q as the reference from the same uniforms, with and without a head, and grows its
    workspace to the next power of two of the batch."""
    lm_head, embed, head = weights
    head = head if with_head else None
    kw = dict(block_size=BLOCK, shift_label=True, pure_prefix_len=1)
    tri = SampledDrafter(lm_head, embed, head, impl="triton", **kw)
    ref = SampledDrafter(lm_head, embed, head, impl="ref", **kw)
    for n in (2, 3):
        g = torch.Generator().manual_seed(n)
        hidden = torch.randn(n, BLOCK, D, generator=g)
        bonus = torch.randint(0, VOCAB, (n,), generator=g)
        params = draft_sampling_params(_info(n, temp=0.8, top_k=4, greedy_rows=(1,)), n)
        t_tok, t_q = tri(hidden, bonus, params, generator=torch.Generator().manual_seed(9))
        r_tok, r_q = ref(hidden, bonus, params, generator=torch.Generator().manual_seed(9))
        assert torch.equal(t_tok, r_tok)
        torch.testing.assert_close(t_q, r_q, rtol=1e-4, atol=1e-6)
        assert tri._op.max_batch == (2 if n == 2 else 4)
