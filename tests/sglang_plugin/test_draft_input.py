"""``DominoDraftInputV2.prepare_for_decode`` leaves exactly the state SGLang 0.5.17's
``DFlashDraftInputV2.prepare_for_decode`` leaves (batch lengths, reserved lengths and sums, top-k
summary, every request's KV watermark, the KV slots allocated and their ``req_to_token``
mapping), on batches of 1-64 requests, mixed watermarks (some need no new slots), mixed top-k,
and over consecutive rounds; and it reads no per-request tensor element (the overhead it
removes)."""

import copy

import pytest
import torch

pytestmark = pytest.mark.sglang

BLOCK = 16


@pytest.fixture
def spec():
    from domino_sglang.bench.host_batch import patched_sglang

    with patched_sglang(BLOCK) as bag:
        yield bag


def _batch(bs, seed):
    from domino_sglang.bench.host_batch import make_batch

    return make_batch(bs, seed, BLOCK)


def _inputs(bs):
    from domino_sglang.bench.host_batch import draft_inputs

    return draft_inputs(bs)


def _state(batch, inp):
    return {"seq_lens_cpu": batch.seq_lens_cpu.tolist(), "seq_lens_sum": batch.seq_lens_sum,
            "reserved": inp.reserved_seq_lens_cpu.tolist(),
            "reserved_sum": inp.reserved_seq_lens_sum, "max_top_k": inp.max_top_k,
            "uniform_top_k": inp.uniform_top_k_value,
            "watermarks": [r.kv.kv_allocated_len for r in batch.reqs],
            "alloc_calls": batch.tree_cache.token_to_kv_pool_allocator.calls,
            "req_to_token": batch.req_to_token_pool.req_to_token.clone()}


def _assert_same(a, b):
    assert torch.equal(a.pop("req_to_token"), b.pop("req_to_token"))
    assert a == b


@pytest.mark.parametrize("bs", [1, 2, 3, 16, 64])  # element writes up to 2, then bulk
def test_prepare_for_decode_matches_sglang(spec, bs):
    batch = _batch(bs, seed=bs)
    twin = copy.deepcopy(batch)
    twin.batch_size = lambda: bs
    for rnd in range(3):  # consecutive rounds: watermarks carry over
        stock, ours = _inputs(bs)
        stock.prepare_for_decode(twin)
        ours.prepare_for_decode(batch)
        a, b = _state(batch, ours), _state(twin, stock)
        assert a["alloc_calls"], "the batch must need new KV slots in this test"
        _assert_same(a, b)
        for r, t in zip(batch.reqs, twin.reqs):  # the next round commits a few tokens
            r.kv_committed_len += 3 + rnd
            t.kv_committed_len += 3 + rnd


def test_prepare_for_decode_uniform_top_k_and_no_allocation(spec):
    batch = _batch(5, seed=7)
    for r in batch.reqs:
        r.sampling_params.top_k = 4
        r.kv.kv_allocated_len = r.kv_committed_len + 2 * BLOCK + 1  # enough headroom
    twin = copy.deepcopy(batch)
    twin.batch_size = lambda: 5
    stock, ours = _inputs(5)
    stock.prepare_for_decode(twin)
    ours.prepare_for_decode(batch)
    a, b = _state(batch, ours), _state(twin, stock)
    assert a["uniform_top_k"] == 4 and a["alloc_calls"] == []
    _assert_same(a, b)


def test_prepare_for_decode_reads_no_per_request_tensor_element(spec, monkeypatch):
    """The removed overhead: SGLang's path indexes a CPU tensor once per request and buffer."""
    calls = {"n": 0}
    real = torch.Tensor.__getitem__

    def counting(self, key):
        if isinstance(key, int):
            calls["n"] += 1
        return real(self, key)

    batch = _batch(64, seed=1)
    twin = copy.deepcopy(batch)
    twin.batch_size = lambda: 64
    stock, ours = _inputs(64)
    monkeypatch.setattr(torch.Tensor, "__getitem__", counting)
    ours.prepare_for_decode(batch)
    ours_calls, calls["n"] = calls["n"], 0
    stock.prepare_for_decode(twin)
    assert ours_calls == 0
    assert calls["n"] >= 64  # the test can see SGLang's per-request reads


def test_workers_return_domino_draft_inputs():
    from domino_sglang.sglang_plugin.draft_input import DominoDraftInputV2
    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    w = object.__new__(DominoWorkerV2)
    t = torch.tensor([5, 6], dtype=torch.int32)
    for out in (w._make_next_draft_input_prefill(bonus_tokens=t, seq_lens=t),
                w._make_next_draft_input_decode(bonus_tokens=t, new_seq_lens=t)):
        assert isinstance(out, DominoDraftInputV2)
        assert out.bonus_tokens.dtype == torch.int64 and out.new_seq_lens.tolist() == [5, 6]
