"""The vocabulary-sharded rollout (2 and 3 gloo CPU ranks) against ``domino_rollout_ref``.

One spawn per world size runs every case and saves what each rank returned plus the collectives
it issued (every ``torch.distributed`` collective is wrapped with a counter); the tests compare
in the parent. V = 37 is divisible by neither 2 nor 3, so the last shard holds padding rows,
which are filled with huge values and must never win.

Exact arithmetic: hidden, lm_head and embeddings are small dyadic numbers (every base logit is
exact in fp32 whatever the summation order) and each W2 row has one non-zero (each correction
is one rounded product), so the shard logits equal the reference's columns bit for bit and the
test checks the combine logic itself, not BLAS blocking. The GRU and W1 are generic: they are
replicated and computed on the same shapes, layouts and thread count as the reference.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from domino_sglang.core import sharded
from domino_sglang.core.drafter import HeadWeights
from domino_sglang.core import SamplingParams, domino_rollout_ref

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _sharded_helpers import (assert_same_tokens, count_collectives,  # noqa: E402
                              planted_tie_problem)

B, K, D, G, R, V = 5, 6, 16, 8, 4, 37
TIED = ((3, 17, 33), (8, 25), (12, 13))  # equal rows: the lowest id must win
PAD_LOGIT = 1e30  # written into padding rows; a padded id winning would be a bug

CASES = {  # name -> (sampled, use_head, shift_label, pure_prefix_len)
    "greedy-head-shift-p1": (False, True, True, 1),
    "greedy-head-noshift-p0": (False, True, False, 0),
    "greedy-nohead": (False, False, True, 0),
    "greedy-head-allprefix": (False, True, True, K - 1),
    "sampled-head-shift-p1": (True, True, True, 1),
    "sampled-head-noshift-p0": (True, True, False, 0),
    "sampled-nohead": (True, False, True, 0),
}


def _problem():
    """A seeded tiny problem with exactly-representable logits and planted cross-shard ties."""
    gen = torch.Generator().manual_seed(1234)
    hidden, lm_head, embed, w2 = planted_tie_problem(gen, B, K, D, V, R, TIED)
    head = HeadWeights(torch.randn(3 * G, D, generator=gen) * 0.5,
                       torch.randn(3 * G, G, generator=gen) * 0.5,
                       torch.randn(R, D + G, generator=gen), w2)
    bonus = torch.tensor([0, 36, 18, 19, 25])  # first, last, and both sides of shard edges
    sampling = SamplingParams(torch.tensor([0.0, 0.7, 1.0, 2.0, 1.5]),
                              torch.tensor([0, 5, 0, 0, 3]),
                              torch.tensor([1.0, 1.0, 0.8, 1.0, 0.9]))
    uniforms = torch.rand(B, K - 1, generator=gen)
    uniforms[0, 0], uniforms[1, 1] = 0.0, 1.0 - 2 ** -24  # both ends of [0, 1)
    return dict(hidden=hidden, bonus=bonus, lm_head=lm_head, embed=embed, head=head,
                sampling=sampling, uniforms=uniforms)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    calls: list[str] = []
    count_collectives(calls)
    p = _problem()
    vp = -(-V // world)
    start = rank * vp
    lm_shard = sharded.shard_vocab_rows(p["lm_head"], start, vp)
    embed_shard = sharded.shard_vocab_rows(p["embed"], start, vp)
    w2_shard = sharded.shard_vocab_rows(p["head"].w2, start, vp)
    n_real = max(0, min(vp, V - start))
    lm_shard[n_real:] = PAD_LOGIT  # padding rows: huge logits if they were not masked
    w2_shard[n_real:] = PAD_LOGIT
    h = p["head"]
    results = {}
    for name, (sampled, use_head, shift_label, prefix) in CASES.items():
        # alternate the two W2 forms the API accepts: the shard, or the full matrix
        w2 = w2_shard if len(results) % 2 == 0 else h.w2
        head = HeadWeights(h.w_ih, h.w_hh, h.w1, w2) if use_head else None
        del calls[:]
        out = sharded.domino_rollout_sharded(
            p["hidden"], p["bonus"], lm_shard, embed_shard, head, shard_start=start,
            vocab_size=V, group=None, shift_label=shift_label, pure_prefix_len=prefix,
            sampling=p["sampling"] if sampled else None,
            uniforms=p["uniforms"] if sampled else None)
        results[name] = dict(tokens=out.tokens, logits=out.logits, probs=out.draft_probs,
                             calls=list(calls))
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"tp{w}")
def run(request, tmp_path_factory):
    """{world, results[rank][case]} from one spawn of ``world`` gloo ranks."""
    world = request.param
    tmp = tmp_path_factory.mktemp(f"tp{world}")
    mp.spawn(_worker, args=(world, str(tmp / "init"), str(tmp)), nprocs=world, join=True)
    return world, [torch.load(tmp / f"rank{r}.pt") for r in range(world)]


def _reference(name):
    """The single-shard reference, on one thread like the ranks: MKL splits a GEMM's rows over
    threads and rounds the GRU/W1 products differently with another thread count."""
    sampled, use_head, shift_label, prefix = CASES[name]
    p = _problem()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reference_call(p, sampled, use_head, shift_label, prefix)
    finally:
        torch.set_num_threads(threads)


def _reference_call(p, sampled, use_head, shift_label, prefix):
    return domino_rollout_ref(p["hidden"], p["bonus"], p["lm_head"], p["embed"],
                              p["head"] if use_head else None, shift_label=shift_label,
                              pure_prefix_len=prefix,
                              sampling=p["sampling"] if sampled else None,
                              uniforms=p["uniforms"] if sampled else None)


@pytest.mark.parametrize("name", list(CASES))
def test_tokens_equal_reference(run, name):
    world, results = run
    ref = _reference(name)
    for rank, res in enumerate(results):
        assert_same_tokens(res[name]["tokens"], ref.tokens, f"tp{world} rank {rank} {name}", V)


@pytest.mark.parametrize("name", list(CASES))
def test_shard_logits_and_probs_equal_reference(run, name):
    world, results = run
    ref = _reference(name)
    vp = -(-V // world)
    padded = torch.full((B, K - 1, world * vp), -float("inf"))
    padded[..., :V] = ref.logits
    for rank, res in enumerate(results):
        assert torch.equal(res[name]["logits"], padded[..., rank * vp:(rank + 1) * vp]), \
            f"tp{world} rank {rank} {name}: shard logits differ from the reference columns"
        if ref.draft_probs is None:
            assert res[name]["probs"] is None
        else:
            assert torch.equal(res[name]["probs"], ref.draft_probs), \
                f"tp{world} rank {rank} {name}: draft probs differ"


def test_planted_ties_cross_shards(run):
    """The tie-breaking is exercised: some greedy step has its max on rows of two ranks."""
    world, _ = run
    vp = -(-V // world)
    cross = 0
    for name in ("greedy-head-shift-p1", "greedy-head-noshift-p0", "greedy-nohead"):
        logits = _reference(name).logits
        at_max = logits == logits.amax(-1, keepdim=True)  # [B, K-1, V]
        owners = [set((at_max[b, i].nonzero()[:, 0] // vp).tolist())
                  for b in range(B) for i in range(K - 1)]
        cross += sum(len(o) > 1 for o in owners)
    assert cross >= 3, f"tp{world}: only {cross} greedy steps tie across shards"


@pytest.mark.parametrize("name", list(CASES))
def test_collectives_per_step(run, name):
    world, results = run
    sampled, use_head, _, prefix = CASES[name]
    n = K - 1
    want = sharded.collectives_per_block(n, has_head=use_head, sampled=sampled,
                                         pure_prefix_len=prefix)
    per_step = 2 if (sampled and use_head and prefix < n) else 1
    assert want <= per_step * n + (1 if prefix == 0 and use_head else 0)
    for rank, res in enumerate(results):
        calls = res[name]["calls"]
        assert len(calls) == want, f"tp{world} rank {rank} {name}: {calls}, expected {want}"
        assert set(calls) <= {"all_gather_single", "all_gather_into_tensor"}, calls
    if not sampled:  # greedy: one collective per step, one per block without a recurrence
        assert want == (n + (prefix == 0) if use_head and prefix < n else 1)


def test_bad_shard_start_raises(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    try:
        p = _problem()
        with pytest.raises(ValueError, match="shard_start=5"):
            sharded.domino_rollout_sharded(p["hidden"], p["bonus"], p["lm_head"], p["embed"],
                                           None, shard_start=5, vocab_size=V,
                                           shift_label=True, pure_prefix_len=0)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", list(CASES))
def test_single_rank_equals_reference(name):
    """``SINGLE_RANK`` (no torch.distributed): the same tokens, logits and q as the reference,
    and ``keep_logits=False`` drops only the logits."""
    sampled, use_head, shift_label, prefix = CASES[name]
    p = _problem()
    want = _reference(name)
    kw = dict(shard_start=0, vocab_size=V, group=sharded.SINGLE_RANK, shift_label=shift_label,
              pure_prefix_len=prefix, sampling=p["sampling"] if sampled else None,
              uniforms=p["uniforms"] if sampled else None)
    args = (p["hidden"], p["bonus"], p["lm_head"], p["embed"], p["head"] if use_head else None)
    got = sharded.domino_rollout_sharded(*args, **kw)
    assert torch.equal(got.tokens, want.tokens)
    assert torch.equal(got.logits, want.logits)
    if sampled:
        assert torch.equal(got.draft_probs, want.draft_probs)
    lean = sharded.domino_rollout_sharded(*args, keep_logits=False, **kw)
    assert lean.logits is None and torch.equal(lean.tokens, want.tokens)


def test_rollout_math_is_used():
    """A ``RolloutMath`` replaces every product: per-step logits, GRU and correction."""
    p = _problem()
    seen = []

    def logits(z, lm):
        seen.append(("logits", z.dim()))
        return z.float() @ lm.float().t()

    def gru(x, s, w_ih, w_hh):
        seen.append("gru")
        return sharded.gru_cell(x, s, w_ih, w_hh)

    def corr(z, s, head):
        seen.append("correction")
        return -sharded.correction(z, s, head)  # flipped: the tokens must follow it

    math = sharded.RolloutMath(logits=logits, gru=gru, correction=corr, per_step=True)
    got = sharded.domino_rollout_sharded(p["hidden"], p["bonus"], p["lm_head"], p["embed"],
                                         p["head"], shard_start=0, vocab_size=V,
                                         group=sharded.SINGLE_RANK, shift_label=True,
                                         pure_prefix_len=0, math=math)
    n = K - 1
    assert seen.count(("logits", 2)) == n and seen.count("gru") == n
    assert seen.count("correction") == n
    flipped = HeadWeights(p["head"].w_ih, p["head"].w_hh, p["head"].w1, -p["head"].w2)
    want = domino_rollout_ref(p["hidden"], p["bonus"], p["lm_head"], p["embed"], flipped,
                              shift_label=True, pure_prefix_len=0)
    assert torch.equal(got.tokens, want.tokens)
