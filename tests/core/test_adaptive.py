"""The batch-adaptive width policy (core.adaptive): estimates, exploration, choice."""

import random

import pytest

from domino_sglang.core.adaptive import WidthPolicy, WidthSlot, bucket_of, default_slots


def test_defaults_and_buckets():
    assert default_slots(16) == (WidthSlot(1, (1, 4, 8, 16)),)
    assert default_slots(4) == (WidthSlot(1, (1, 2, 4)),)
    assert [bucket_of(b) for b in (1, 2, 3, 5, 16, 17, 64)] == [1, 2, 4, 8, 16, 32, 64]
    with pytest.raises(ValueError, match="widths"):
        WidthPolicy(8, (WidthSlot(1, (9,)),))
    with pytest.raises(ValueError, match="block_size"):
        WidthPolicy(1)


def test_slot_routing():
    p = WidthPolicy(16, (WidthSlot(8, (1, 4)), WidthSlot(1, (16, 8)), WidthSlot(32, (1,))))
    assert p.widths_for(1) == (16, 8) and p.widths_for(7) == (16, 8)
    assert p.widths_for(8) == (1, 4) and p.widths_for(31) == (1, 4)
    assert p.widths_for(64) == (1,)
    assert all(p.choose(40) == 1 for _ in range(20))  # a single candidate: no exploration


def test_survival_from_censored_accept_lengths():
    p = WidthPolicy(8, shrink=0.0)
    p.observe_accept(8, [0, 1, 2, 7, 7])  # accepted drafts per request
    assert p.survival(1) == pytest.approx(4 / 5) and p.survival(2) == pytest.approx(3 / 5)
    assert p.survival(3) == pytest.approx(2 / 5) and p.survival(7) == pytest.approx(2 / 5)
    assert p.expected_tokens(1) == 1.0
    assert p.expected_tokens(3) == pytest.approx(1 + 4 / 5 + 3 / 5)
    # censored at width 3: drafts 1, 2 of three requests verified, draft 3 never
    q = WidthPolicy(8, shrink=0.0)
    q.observe_accept(3, [2, 2, 1])
    assert q.acceptance_rate(1) == 1.0 and q.acceptance_rate(2) == pytest.approx(2 / 3)
    p.observe_accept(1, [0, 0])  # no drafts verified: nothing learnt
    assert p.survival(1) == pytest.approx(4 / 5)
    # shrinkage: a position never verified takes the pooled rate, not an arbitrary prior
    r = WidthPolicy(16, shrink=4.0, prior_rate=0.5)
    for _ in range(20):
        r.observe_accept(4, [3] * 8)  # drafts 1-3 always accepted, 4+ never verified
    assert r.acceptance_rate(2) > 0.97 and r.acceptance_rate(10) > 0.97


def _simulate(policy, bs, rounds, cost, accept_p, seed=0):
    """Rounds at ``bs``: accept length geometric with per-draft probability ``accept_p``,
    round cost ``cost(width)``; returns the widths chosen."""
    rng = random.Random(seed)
    picks = []
    for _ in range(rounds):
        w = policy.choose(bs)
        picks.append(w)
        acc = []
        for _ in range(bs):
            a = 0
            while a < w - 1 and rng.random() < accept_p:
                a += 1
            acc.append(a)
        policy.observe_accept(w, acc)
        policy.observe_cost(bs, w, cost(w) * (1 + 0.02 * rng.random()))
    return picks


def test_picks_the_fastest_width_and_explores_first():
    # cheap verify, good drafts: the whole block wins
    p = WidthPolicy(16)
    picks = _simulate(p, 1, 300, cost=lambda w: 10.0 + 0.05 * w, accept_p=0.85)
    # every candidate measured before choosing (min_samples, after the first round of each)
    assert set(picks[:16]) == {1, 4, 8, 16} and picks[:16] == sorted(picks[:16])
    assert picks[-100:].count(16) > 90
    # compute-bound verify (cost ~ width), poor drafts: no speculation wins
    p = WidthPolicy(16)
    picks = _simulate(p, 64, 300, cost=lambda w: 8.0 * w ** 0.9, accept_p=0.4)
    assert picks[-100:].count(1) > 90
    # in between: a narrow block
    p = WidthPolicy(16)
    picks = _simulate(p, 16, 400, cost=lambda w: 7.0 + 1.5 * w, accept_p=0.7)
    tail = picks[-100:]
    assert max(set(tail), key=tail.count) == 4, p.summary()


def test_buckets_are_independent_and_probes_refresh_the_wide_block():
    p = WidthPolicy(16, probe_every=25)
    _simulate(p, 64, 200, cost=lambda w: 8.0 * w, accept_p=0.5)
    assert p.summary()["buckets"][64]["current"] == 1
    picks = _simulate(p, 64, 100, cost=lambda w: 8.0 * w, accept_p=0.5, seed=1)
    assert 1 < len(set(picks)) and picks.count(1) > 80  # probes, but mostly the best
    # batch 1 has its own costs: the whole block is cheap there
    picks = _simulate(p, 1, 200, cost=lambda w: 5.0 + 0.01 * w, accept_p=0.9, seed=2)
    assert picks[-50:].count(16) > 40
    # acceptance that improves is seen through the probes, and the policy follows it
    p = WidthPolicy(16, probe_every=20)
    _simulate(p, 8, 200, cost=lambda w: 10.0 + 1.0 * w, accept_p=0.2)
    assert p.summary()["buckets"][8]["current"] in (1, 4)
    picks = _simulate(p, 8, 400, cost=lambda w: 10.0 + 1.0 * w, accept_p=0.97, seed=3)
    assert picks[-50:].count(16) > 40, p.summary()


def test_switch_costs_do_not_hide_a_faster_width():
    """The policy holds width 1 (width 8 is slow), then width 8 becomes cheap: 1.6 ms per
    round, but 3.6 ms for a round right after a switch (another verify graph and workspace).
    Measured on single-round probes, width 8 would look slow forever (the negative control);
    counting steady rounds of probe runs, the policy sees the change and moves to width 8
    (E[tokens | 8] = 2.4 per 1.6 ms beats 1 token per 1.0 ms)."""

    def run(policy, rounds, cost8, steady_aware, seed=0):
        rng = random.Random(seed)
        prev, picks = None, []
        for _ in range(rounds):
            w = policy.choose(1)
            picks.append(w)
            switched = prev is not None and prev != w
            ms = 1.0 if w == 1 else cost8 + (2.0 if switched else 0.0)
            acc = [0]
            while acc[0] < w - 1 and rng.random() < 0.6:
                acc[0] += 1
            policy.observe_accept(w, acc)
            policy.observe_cost(1, w, ms * (1 + 0.01 * rng.random()),
                                steady=not switched or not steady_aware)
            prev = w
        return picks

    for run_len, steady_aware, winner in ((3, True, 8), (1, False, 1)):
        p = WidthPolicy(8, (WidthSlot(1, (1, 8)),), probe_every=20, run_len=run_len)
        picks = run(p, 200, cost8=5.0, steady_aware=steady_aware)
        assert picks[-50:].count(1) > 40, p.summary()  # width 8 is slow: width 1 held
        picks = run(p, 600, cost8=1.6, steady_aware=steady_aware, seed=1)
        assert picks[-100:].count(winner) > 70, (run_len, steady_aware, p.summary())


def test_hysteresis_keeps_the_current_width_on_a_tie():
    p = WidthPolicy(8, (WidthSlot(1, (4, 8)),), switch_margin=0.05, update_interval=1)
    for _ in range(12):
        w = p.choose(2)
        p.observe_accept(w, [7, 7])
        p.observe_cost(2, w, 10.0 if w == 8 else 5.0 * 1.0)
    # rates: width 4 -> 4 / 5 = 0.8, width 8 -> 8 / 10 = 0.8: a tie, no switching back and forth
    seen = {p.choose(2) for _ in range(30)}
    assert len(seen) == 1


def test_cost_is_a_robust_median_after_the_first_round():
    p = WidthPolicy(8, (WidthSlot(1, (1, 8)),), min_samples=3)
    for ms in (500.0, 2.0, 2.2, 1.8, 90.0, 2.1):  # a compile on first use, one stall
        p.observe_cost(4, 1, ms)
    assert p.rate(4, 1) == pytest.approx(1 / 2.1)  # median of 2.0 2.2 1.8 90 2.1
    p2 = WidthPolicy(8, cost_skip=0, cost_window=3)
    for ms in (1.0, 2.0, 3.0, 4.0):
        p2.observe_cost(1, 8, ms)
    assert p2.rate(1, 8) == pytest.approx(p2.expected_tokens(8) / 3.0)  # last 3: 2 3 4
