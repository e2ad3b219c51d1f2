"""Batch-adaptive verify width on CPU (issue #14): ``adaptive.narrow_round`` for several rounds of
a batch, the width changing from round to round mid-request (1 = no speculation, 2 .. B-1), must
commit exactly plain greedy decoding; the worker's dispatch feeds the policy through the meter.

Driven for real: ``narrow_round`` (draft tokens, verify tensors, SGLang's greedy accept
``compute_dflash_correct_drafts_and_bonus``, commit lengths, out tokens at stride ``w``, draft-KV
commit call, ``GenerationBatchResult``), ``RoundMeter`` (CPU clock), ``WidthPolicy``.
Stood in (they need SGLang's model runner, attention backends and KV pools): the draft block
(``_domino_draft_block``: the core drafter + the Domino head reference), the target verify
(Transformers with one KV cache per request, cropped to the committed length),
``prepare_for_verify`` and the draft-KV writer (``extend_context`` with ``commit_lens`` rows).
"""

from types import SimpleNamespace

import pytest
import torch
from _pair import plain_greedy

VOCAB, BLOCK, MASK = 16, 6, 15
PROMPTS = [[2, 3, 4], [5, 6, 7, 8, 9, 2], [4, 4], [7, 1, 3]]
NEW_TOKENS = 30
MAX_LEN = 96


@pytest.fixture(scope="module")
def pair():
    from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target

    target = build_tiny_target(vocab_size=VOCAB, scale=3.0, eos_token_id=1)
    drafter = build_tiny_drafter(target, block_size=BLOCK, mask_token_id=MASK, head_scale=10.0)
    with torch.no_grad():
        drafter.embed_proj[0].weight[:, target.config.hidden_size:] *= 30.0
    return target, drafter


class _Loop:
    """The stand-ins around narrow_round: per-request target caches and draft contexts."""

    def __init__(self, target, drafter):
        from transformers import DynamicCache

        from domino_sglang.hf.generate import layer_features

        self.target, self.drafter = target, drafter
        self.layer_ids = drafter.config.target_layer_ids
        self.embed = target.get_input_embeddings().weight
        self.feat = layer_features
        self.caches, self.ctxs, self.committed = [], [], [[] for _ in PROMPTS]
        bonus = []
        with torch.no_grad():
            for r, prompt in enumerate(PROMPTS):
                self.caches.append(DynamicCache())
                out = target(torch.tensor([prompt]), past_key_values=self.caches[r],
                             use_cache=True, output_hidden_states=True)
                self.ctxs.append(drafter.extend_context(
                    None, layer_features(out.hidden_states, self.layer_ids),
                    torch.arange(len(prompt))[None]))
                bonus.append(int(out.logits[0, -1].argmax()))
                self.committed[r].append(bonus[-1])
        self.bonus = torch.tensor(bonus)
        self.prefix = torch.tensor([len(p) for p in PROMPTS], dtype=torch.int64)
        self.req_pool = torch.tensor([3, 0, 2, 1], dtype=torch.int64)
        self.req_to_token = (torch.arange(4 * MAX_LEN, dtype=torch.int32).view(4, MAX_LEN)
                             + 1000)
        self.draft_calls = 0
        self.writes = []

    # -- worker seams -----------------------------------------------------------------------
    def draft_block(self, batch):
        from domino_sglang.core import domino_rollout_ref

        self.draft_calls += 1
        bs = len(batch.seq_lens)
        block_ids = torch.full((bs, BLOCK), MASK, dtype=torch.int64)
        block_ids[:, 0] = batch.spec_info.bonus_tokens
        positions = batch.seq_lens[:, None] + torch.arange(BLOCK)
        loc = self.req_to_token[self.req_pool][torch.arange(bs)[:, None], positions].long()
        with torch.no_grad():
            hidden = torch.cat([self.drafter(self.embed[block_ids[r:r + 1]], positions[r:r + 1],
                                             self.ctxs[r]) for r in range(bs)])
            nxt = domino_rollout_ref(hidden, block_ids[:, 0], self.target.lm_head.weight,
                                     self.embed, self.drafter.head_weights(),
                                     shift_label=self.drafter.config.shift_label,
                                     pure_prefix_len=self.drafter.config.pure_draft_prefix_len
                                     ).tokens
        self.last_drafts = nxt
        return block_ids, positions, loc, nxt

    def verify(self, batch=None, forward_batch=None, is_verify=True, skip_attn_backend_init=True):
        vi = forward_batch.verify_input
        w = int(vi.draft_token_num)
        toks, pos = vi.draft_token.view(-1, w), vi.positions.view(-1, w)
        logits, feats = [], []
        with torch.no_grad():
            for r in range(toks.shape[0]):
                out = self.target(toks[r:r + 1], past_key_values=self.caches[r], use_cache=True,
                                  output_hidden_states=True, position_ids=pos[r:r + 1])
                logits.append(out.logits[0])
                feats.append(self.feat(out.hidden_states, self.layer_ids)[0])
        lo = SimpleNamespace(next_token_logits=torch.cat(logits), hidden_states=torch.cat(feats))
        return SimpleNamespace(logits_output=lo, can_run_cuda_graph=False)

    def write_draft_kv(self, *, target_hidden, cache_loc, positions, cache_loc_2d, commit_lens):
        bs, w = cache_loc_2d.shape
        assert target_hidden.shape[0] == bs * w == positions.numel() == cache_loc.numel()
        rows = target_hidden.view(bs, w, -1)
        pos = positions.view(bs, w)
        with torch.no_grad():
            for r in range(bs):
                c = int(commit_lens[r])
                self.ctxs[r] = self.drafter.extend_context(self.ctxs[r], rows[r:r + 1, :c],
                                                           pos[r:r + 1, :c])
        self.writes.append((w, cache_loc_2d.clone()))

    def worker(self, use_kernel=False):
        return SimpleNamespace(
            block_size=BLOCK, device=torch.device("cpu"), _domino_verify_states=None,
            _use_triton_accept_bonus=use_kernel,
            _next_accept_bonus_buffers=lambda bs: (  # DFlash's buffers, one slot each round
                torch.empty(bs, dtype=torch.int32), torch.empty(bs, dtype=torch.int32),
                torch.empty(bs, dtype=torch.int64), torch.empty(bs, BLOCK, dtype=torch.int64),
                torch.empty(bs, dtype=torch.int64)),
            _domino_draft_block=self.draft_block,
            target_worker=SimpleNamespace(forward_batch_generation=self.verify),
            model_runner=SimpleNamespace(req_to_token_pool=SimpleNamespace(
                req_to_token=self.req_to_token)),
            _append_target_hidden_to_draft_kv_by_loc=self.write_draft_kv,
            _make_next_draft_input_decode=lambda bonus_tokens, new_seq_lens: SimpleNamespace(
                bonus_tokens=bonus_tokens, new_seq_lens=new_seq_lens))

    def batch(self):
        bs = len(PROMPTS)
        return SimpleNamespace(
            seq_lens=self.prefix.clone(), seq_lens_cpu=self.prefix.clone(),
            seq_lens_sum=int(self.prefix.sum()), req_pool_indices=self.req_pool.clone(),
            spec_info=SimpleNamespace(bonus_tokens=self.bonus.clone(),
                                      reserved_seq_lens_cpu=None),
            has_grammar=False, sampling_info=None, out_cache_loc=None, reqs=[None] * bs)


@pytest.fixture
def fake_prepare(monkeypatch):
    from sglang.srt.speculative.dflash_info import DFlashVerifyInput

    monkeypatch.setattr(DFlashVerifyInput, "prepare_for_verify",
                        lambda self, batch, tw: (SimpleNamespace(verify_input=self), False))


@pytest.mark.sglang
@pytest.mark.parametrize("use_kernel", [True, False], ids=["triton-accept", "torch-accept"])
def test_width_changes_mid_request_commitplain_greedy(pair, fake_prepare, use_kernel):
    from domino_sglang.sglang_plugin.adaptive import narrow_round

    target, drafter = pair
    loop = _Loop(target, drafter)
    worker = loop.worker(use_kernel)
    widths = [3, 1, 5, 2, 1, 4, 5, 3, 2]
    rounds = accepted = 0
    seen_widths = set()
    while min(len(c) for c in loop.committed) < NEW_TOKENS:
        w = widths[rounds % len(widths)]
        rounds += 1
        assert rounds <= 2 * NEW_TOKENS, "the loop does not advance"
        batch = loop.batch()
        before = loop.draft_calls
        out = narrow_round(worker, batch, w)
        assert loop.draft_calls == before + (w > 1)  # no draft forward without speculation
        assert out.speculative_num_draft_tokens == w
        commit = out.accept_lens
        assert ((commit >= 1) & (commit <= w)).all()
        toks = out.next_token_ids.view(-1, w)
        assert torch.equal(out.new_seq_lens, loop.prefix + commit)
        # the verify slots are the request's next w KV locations
        want_loc = loop.req_to_token[loop.req_pool][
            torch.arange(len(PROMPTS))[:, None], loop.prefix[:, None] + torch.arange(w)].long()
        assert torch.equal(loop.writes[-1][1], want_loc) and loop.writes[-1][0] == w
        assert torch.equal(batch.out_cache_loc, want_loc.reshape(-1))
        for r in range(len(PROMPTS)):
            c = int(commit[r])
            if w > 1:  # the verified drafts are the block's first w-1 proposals
                assert toks[r, :c - 1].tolist() == loop.last_drafts[r, :c - 1].tolist()
            loop.committed[r] += toks[r, :c].tolist()
            loop.caches[r].crop(int(out.new_seq_lens[r]))
            accepted += c > 1
        assert torch.equal(toks.gather(1, (commit - 1).long()[:, None]).view(-1),
                           out.next_draft_input.bonus_tokens)
        loop.prefix = out.new_seq_lens.clone()
        loop.bonus = out.next_draft_input.bonus_tokens.clone()
        seen_widths.add(w)
    for r, prompt in enumerate(PROMPTS):
        want = plain_greedy(target, prompt, len(loop.committed[r]))
        assert loop.committed[r] == want, f"request {r}: {loop.committed[r]} vs {want}"
    assert accepted > 0 and seen_widths == set(widths)


@pytest.mark.sglang
def test_dispatch_feeds_the_policy(pair, fake_prepare, monkeypatch):
    """DominoWorkerV2.forward_batch_generation: prefill / idle / logprob rounds go to DFlash's
    round untouched; decode rounds take the policy's width (the whole block: DFlash's round,
    narrower: narrow_round) and the meter feeds cost and acceptance back."""
    from sglang.srt.speculative.dflash_worker_v2 import DFlashWorkerV2

    from domino_sglang.core.adaptive import WidthPolicy, WidthSlot
    from domino_sglang.sglang_plugin import adaptive
    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    calls = []

    def fake_full(self, batch, on_publish=None, grammar_barrier=None):
        calls.append(("full", len(batch.seq_lens)))
        return SimpleNamespace(accept_lens=torch.full((len(batch.seq_lens),), BLOCK,
                                                      dtype=torch.int32))

    def fake_narrow(worker, batch, width, on_publish=None, grammar_barrier=None):
        calls.append(("narrow", width))
        return SimpleNamespace(accept_lens=torch.ones(len(batch.seq_lens), dtype=torch.int32))

    monkeypatch.setattr(DFlashWorkerV2, "forward_batch_generation", fake_full)
    monkeypatch.setattr(adaptive, "narrow_round", fake_narrow)
    w = DominoWorkerV2.__new__(DominoWorkerV2)
    policy = WidthPolicy(BLOCK, (WidthSlot(1, (1, BLOCK)),), min_samples=2)
    w.__dict__.update(block_size=BLOCK, _domino_policy=policy, _warned_sampling_fallback=True,
                      _domino_meter=adaptive.RoundMeter(policy, "cpu", max_bs=8),
                      ps=SimpleNamespace(tp_rank=0),
                      domino_config=SimpleNamespace(sampled_drafts=False))

    def batch(mode="decode", bs=2, logprob=False):
        fm = SimpleNamespace(is_extend=lambda: mode == "extend", is_idle=lambda: mode == "idle")
        return SimpleNamespace(forward_mode=fm, is_extend_in_batch=False, return_logprob=logprob,
                               seq_lens=torch.zeros(bs, dtype=torch.int64),
                               spec_info=object(), sampling_info=None)

    w.forward_batch_generation(batch("extend"))
    w.forward_batch_generation(batch("idle"))
    w.forward_batch_generation(batch(logprob=True))
    assert calls == [("full", 2)] * 3 and policy.round == 0
    for _ in range(10):  # exploration: a run of each width, its switch round not counted
        w.forward_batch_generation(batch())
    assert {c for c in calls[3:]} == {("full", 2), ("narrow", 1)}
    w._domino_meter.drain()
    st = policy.summary()["buckets"][2]
    assert set(st["cost_ms"]) == {1, BLOCK}
    # the full rounds accepted every draft, the narrow ones verified none
    assert policy.acceptance_rate(1) > 0.5


@pytest.mark.sglang
def test_sampled_rounds_draft_from_q_at_every_width(monkeypatch):
    """DOMINO_SAMPLED_DRAFTS=1: a decode round with a sampled request runs narrow_round even at
    the full width (adaptive on or off), greedy-only rounds keep DFlash's; narrow_round hands
    the drafts' q (first w-1 positions) to the sampled verify and clears it."""
    from sglang.srt.speculative import dflash_worker_v2 as dw
    from sglang.srt.speculative.dflash_worker_v2 import DFlashWorkerV2

    from domino_sglang.sglang_plugin import adaptive
    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    real = adaptive.narrow_round
    calls = []
    monkeypatch.setattr(DFlashWorkerV2, "forward_batch_generation",
                        lambda self, batch, *a: calls.append("full"))
    monkeypatch.setattr(adaptive, "narrow_round",
                        lambda worker, batch, width, *a: calls.append(("narrow", width)))
    w = DominoWorkerV2.__new__(DominoWorkerV2)
    w.__dict__.update(block_size=BLOCK, _domino_policy=None, _domino_meter=None,
                      _warned_sampling_fallback=True, ps=SimpleNamespace(tp_rank=0),
                      domino_config=SimpleNamespace(sampled_drafts=True))
    fm = SimpleNamespace(is_extend=lambda: False, is_idle=lambda: False)

    def batch(greedy):
        return SimpleNamespace(forward_mode=fm, is_extend_in_batch=False, return_logprob=False,
                               seq_lens=torch.zeros(2, dtype=torch.int64), spec_info=object(),
                               sampling_info=SimpleNamespace(is_all_greedy=greedy))

    w.forward_batch_generation(batch(greedy=False))
    w.forward_batch_generation(batch(greedy=True))
    w.domino_config = SimpleNamespace(sampled_drafts=False)
    w.forward_batch_generation(batch(greedy=False))
    assert calls == [("narrow", BLOCK), "full", "full"]

    # narrow_round's verify gets q[:, :w-1] and the worker's q is consumed
    seen = {}

    def fake_accept(**kw):
        seen.update(kw)
        bs = kw["candidates"].shape[0]
        return torch.zeros(bs, dtype=torch.int64), kw["candidates"][:, 0].clone()

    monkeypatch.setattr(dw, "compute_dflash_sampling_correct_drafts_and_bonus", fake_accept)
    monkeypatch.setattr(dw, "is_dflash_sampling_verify_available", lambda: True)
    bs, width, vocab = 2, 3, 7
    q = torch.rand(bs, BLOCK - 1, vocab)
    block_ids = torch.zeros(bs, BLOCK, dtype=torch.int64)
    drafts = torch.ones(bs, BLOCK - 1, dtype=torch.int64)
    hidden = torch.zeros(bs * width, 4)
    worker = SimpleNamespace(
        block_size=BLOCK, _domino_verify_states=None, _domino_draft_q=q,
        _domino_draft_block=lambda b: (block_ids, torch.zeros(bs, BLOCK, dtype=torch.int64),
                                       torch.zeros(bs, BLOCK, dtype=torch.int64), drafts),
        target_worker=SimpleNamespace(forward_batch_generation=lambda **kw: SimpleNamespace(
            logits_output=SimpleNamespace(next_token_logits=torch.zeros(bs * width, vocab),
                                          hidden_states=hidden), can_run_cuda_graph=False)),
        _append_target_hidden_to_draft_kv_by_loc=lambda **kw: None,
        _make_next_draft_input_decode=lambda bonus_tokens, new_seq_lens: None)
    info = SimpleNamespace(is_all_greedy=False)
    b = SimpleNamespace(seq_lens=torch.zeros(bs, dtype=torch.int64), seq_lens_cpu=None,
                        spec_info=SimpleNamespace(bonus_tokens=torch.zeros(bs), max_top_k=None,
                                                  uniform_top_k_value=None,
                                                  reserved_seq_lens_cpu=None),
                        has_grammar=False, sampling_info=info, reqs=[None] * bs)
    monkeypatch.setattr(adaptive, "apply_dflash_verify_logits_adjustments", lambda **kw: None)
    monkeypatch.setattr(adaptive, "verify_forward", lambda wk, bt, vi, w_: wk.target_worker
                        .forward_batch_generation())
    real(worker, b, width)
    assert torch.equal(seen["draft_probs"], q[:, : width - 1])
    assert worker._domino_draft_q is None


def test_meter_charges_the_interval_to_the_round_that_started_it():
    from domino_sglang.core.adaptive import WidthPolicy
    from domino_sglang.sglang_plugin.adaptive import RoundMeter

    now = [0.0]
    policy = WidthPolicy(BLOCK, cost_skip=0)
    meter = RoundMeter(policy, "cpu", max_bs=4, clock=lambda: now[0])
    meter.begin(2, 4)  # round A: width 4
    now[0] = 0.002  # its forward took 2 ms of host time
    meter.end(torch.tensor([3, 1], dtype=torch.int32))
    now[0] = 0.005
    meter.begin(2, 1)  # round B: closes A's 5 ms
    meter.end(torch.tensor([1, 1], dtype=torch.int32))
    now[0] = 0.007
    meter.interrupt()  # a prefill ran: B's interval is not a decode round's cost
    now[0] = 0.050
    meter.begin(2, BLOCK)
    meter.end(None)  # no commit lengths: acceptance not read, cost still timed
    st = policy.summary()["buckets"][2]["cost_ms"]
    assert st == {4: pytest.approx(5.0)}
    assert policy.summary()["buckets"][2]["forward_ms"][4] == pytest.approx(2.0)
    assert meter.drain() == 1  # A: accepted drafts [2, 0] at width 4 (B, width 1: no copy)
    # position 1 verified for both requests of A (one accepted), never at width 1
    assert (policy._trials[1], policy._accepts[1]) == (2, 1) and policy._trials[3] == 1
    # a round after a width switch pays for it: passed as not steady, not counted
    policy = WidthPolicy(BLOCK, cost_skip=0)
    meter = RoundMeter(policy, "cpu", max_bs=4, clock=lambda: now[0])
    for i, (width, ms) in enumerate([(4, 3.0), (4, 1.0), (8, 9.0), (8, 2.0), (8, 2.0), (4, 7.0),
                                     (4, 1.0), (1, 1.0)]):
        now[0] = i  # every round starts on a whole second: the cost is the next gap
        meter.begin(2, width)
        now[0] = i + ms / 1e3
        meter.end(torch.tensor([1, 1], dtype=torch.int32))
    # rounds 0-6 closed (1000 ms each by the clock above), steady: 0, 1, 3, 4, 6
    costs = policy.summary()["buckets"][2]["forward_ms"]
    assert costs == {4: pytest.approx(1.0), 8: pytest.approx(2.0)}, costs
    assert len(policy._buckets[2].cost[4].buf) == 3 and len(policy._buckets[2].cost[8].buf) == 2
    big = RoundMeter(policy, "cpu", max_bs=1)
    big.begin(3, 4)  # larger than the pinned slots: timed, acceptance not read
    big.end(torch.ones(3, dtype=torch.int32))
    assert big.drain() == 0


def test_meter_trace_records_every_round_as_the_policy_saw_it(tmp_path):
    """DOMINO_ADAPTIVE_TRACE: one JSON line per closed round with the period and forward the
    policy was given, steady or not, rounds since the switch; interrupts marked; flushed in
    chunks and on demand (at exit)."""
    import json

    from domino_sglang.core.adaptive import WidthPolicy
    from domino_sglang.sglang_plugin.adaptive import RoundMeter

    now = [0.0]
    path = tmp_path / "trace.jsonl"
    policy = WidthPolicy(BLOCK, cost_skip=0)
    meter = RoundMeter(policy, "cpu", max_bs=4, clock=lambda: now[0], trace=str(path))
    meter._trace.flush_every, meter._trace.flush_s = 3, 1e9
    plan = [(4, 3.0), (4, 1.0), (8, 9.0), (8, 2.0), (8, 2.0)]
    for i, (width, ms) in enumerate(plan):
        now[0] = i
        meter.begin(2, width)
        now[0] = i + ms / 1e3
        meter.end(torch.tensor([1, 1], dtype=torch.int32))
    assert len(path.read_text().splitlines()) == 3  # the first chunk, written at 3 records
    now[0] = 5.5
    meter.interrupt()
    meter._trace.flush()
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    rounds = [r for r in recs if "w" in r]
    assert [r["w"] for r in rounds] == [4, 4, 8, 8]  # round 4 was cut by the interrupt
    assert [r["ms"] for r in rounds] == pytest.approx([1000.0] * 4)
    assert [r["fwd_ms"] for r in rounds] == pytest.approx([3.0, 1.0, 9.0, 2.0])
    assert [r["steady"] for r in rounds] == [True, True, False, True]
    assert [r["run"] for r in rounds] == [0, 1, 0, 1]
    assert recs[-1] == {"t": 5.5, "interrupt": True} and len(recs) == 5
    # the policy got the same numbers (steady rounds only)
    assert policy.summary()["buckets"][2]["forward_ms"] == {4: pytest.approx(2.0),
                                                            8: pytest.approx(2.0)}
    with pytest.raises(OSError):
        RoundMeter(policy, "cpu", max_bs=4, trace=str(tmp_path / "missing" / "t.jsonl"))


def test_adaptive_trace_switch_reaches_the_serve_config():
    from domino_sglang.sglang_plugin.options import read_developer_switches

    assert read_developer_switches({}).adaptive_trace is None
    sw = read_developer_switches({"DOMINO_ADAPTIVE_TRACE": " /tmp/t.jsonl "})
    assert sw.adaptive_trace == "/tmp/t.jsonl"


@pytest.mark.sglang
def test_memory_report_in_kv_tokens(caplog):
    """The start-up line of issue #14 item 4: the plugin's extra memory and its worth in KV
    tokens (target + draft bytes per token)."""
    import logging

    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    def pool(per_token, size=1000):
        return SimpleNamespace(size=size, get_kv_size_bytes=lambda: (per_token * size // 2,
                                                                     per_token * size // 2))

    w = DominoWorkerV2.__new__(DominoWorkerV2)
    op = SimpleNamespace(nbytes=lambda: 3 * 2 ** 20)
    w.__dict__.update(
        _draft_sampler=SimpleNamespace(head_fn=SimpleNamespace(op=op)),
        _domino_graph_bytes=2 ** 20,
        _target_worker=SimpleNamespace(model_runner=SimpleNamespace(token_to_kv_pool=pool(1024))),
        draft_model_runner=SimpleNamespace(token_to_kv_pool=pool(1024)))
    with caplog.at_level(logging.INFO, logger="domino_sglang.sglang_plugin.worker"):
        w._domino_memory_report()
    msg = caplog.records[-1].getMessage()
    # 4 MiB at 2048 bytes per token = 2048 tokens
    assert "3.0 MiB" in msg and "1.0 MiB" in msg and "about 2048 tokens" in msg, msg
    assert "GI_TABLE" not in msg  # no table known: no hint
    # an fp32 GRU input table: the bf16 switch and what it would give back (half the table)
    op.weights = SimpleNamespace(gi_table=torch.zeros(2 ** 18, dtype=torch.float32))  # 1 MiB
    with caplog.at_level(logging.INFO, logger="domino_sglang.sglang_plugin.worker"):
        w._domino_memory_report()
    msg = caplog.records[-1].getMessage()
    assert "DOMINO_HEAD_GI_TABLE=bf16 would give back 0.5 MiB (about 256 tokens)" in msg, msg
    op.weights.gi_table = torch.zeros(2 ** 18, dtype=torch.bfloat16)
    with caplog.at_level(logging.INFO, logger="domino_sglang.sglang_plugin.worker"):
        w._domino_memory_report()
    assert "GI_TABLE" not in caplog.records[-1].getMessage()
    # tree mode: the draft sampler is the tree builder's, whose memory is counted the same way
    builder = SimpleNamespace(nbytes=lambda: 5 * 2 ** 20, weights=SimpleNamespace(
        gi_table=torch.zeros(2 ** 18, dtype=torch.float32)))
    w._draft_sampler = SimpleNamespace(builder=builder)
    with caplog.at_level(logging.INFO, logger="domino_sglang.sglang_plugin.worker"):
        w._domino_memory_report()
    msg = caplog.records[-1].getMessage()
    assert "head table + buffers 5.0 MiB" in msg and "give back 0.5 MiB" in msg, msg


@pytest.mark.sglang
def test_memory_report_finds_the_bound_triton_head(caplog):
    """The chain sampler as the worker builds it (``DominoDraftSampler`` binds the Triton head
    at construction: ``head_fn`` is then a ``TritonDominoHead``): the report counts its op. The
    H100 servers of 2026-12-07 logged 0.0 MiB here while the head had bound 72.3 MiB."""
    import logging

    from domino_sglang.core.drafter import HeadWeights
    from domino_sglang.sglang_plugin.head import DominoDraftSampler, TritonHeadImpl
    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    g = torch.Generator().manual_seed(0)
    d, gh, r, v = 16, 64, 4, 4096  # a GRU input table of 3 MiB (fp32)
    head = HeadWeights(*(torch.randn(*s, generator=g) * 0.1
                         for s in ((3 * gh, d), (3 * gh, gh), (r, d + gh), (v, r))))
    sampler = DominoDraftSampler(lm_head=torch.randn(v, d, generator=g),
                                 embed=torch.randn(v, d, generator=g), head=head, block_size=4,
                                 shift_label=True, pure_prefix_len=1, max_bs=2,
                                 head_fn=TritonHeadImpl(), impl_name="triton")
    want = sampler.head_fn.op.nbytes()
    assert want > 2 ** 20
    pool = SimpleNamespace(size=10, get_kv_size_bytes=lambda: (5120, 5120))
    w = DominoWorkerV2.__new__(DominoWorkerV2)
    w.__dict__.update(_draft_sampler=sampler, _domino_graph_bytes=0,
                      _target_worker=SimpleNamespace(model_runner=SimpleNamespace(
                          token_to_kv_pool=pool)),
                      draft_model_runner=SimpleNamespace(token_to_kv_pool=pool))
    with caplog.at_level(logging.INFO, logger="domino_sglang.sglang_plugin.worker"):
        w._domino_memory_report()
    msg = caplog.records[-1].getMessage()
    assert f"head table + buffers {want / 2 ** 20:.1f} MiB" in msg, msg
    assert "DOMINO_HEAD_GI_TABLE=bf16 would give back" in msg, msg
