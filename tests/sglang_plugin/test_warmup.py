"""The ``domino`` start-up warm-up (SGLang's ``--warmups`` registry): on by default for domino
servers, left out by ``--skip-server-warmup`` or an explicit ``--warmups``; its requests cover
greedy, sampled (top-k, top-p, min-p, penalties), streamed and JSON-schema kinds, all sent
through the tokenizer manager at once; a failure is logged and never stops the server."""

import asyncio
import json
from types import SimpleNamespace

import pytest
from _logs import logged

from domino_sglang.sglang_plugin.warmup import warmup_requests


def test_warmup_requests_cover_the_kinds():
    reqs = warmup_requests(vocab_size=300, grammar=True)
    kinds = {r["kind"] for r in reqs}
    assert kinds == {"greedy", "sampled", "stream", "json"}
    assert sum(r["kind"] == "greedy" for r in reqs) >= 2  # a batched greedy round
    params = [r["sampling_params"] for r in reqs]
    for key in ("top_k", "top_p", "min_p", "repetition_penalty", "frequency_penalty"):
        assert any(key in p for p in params), key
    assert all(0 < t < 299 for r in reqs for t in r["input_ids"])
    json.loads(next(p["json_schema"] for p in params if "json_schema" in p))
    assert "json" not in {r["kind"] for r in warmup_requests(300, grammar=False)}
    with pytest.raises(ValueError, match="vocab_size 8"):
        warmup_requests(8, grammar=False)


class _FakeTM:
    def __init__(self, fail=False, grammar="xgrammar", skip_tokenizer_init=False):
        self.model_config = SimpleNamespace(vocab_size=500)
        self.server_args = SimpleNamespace(grammar_backend=grammar,
                                           skip_tokenizer_init=skip_tokenizer_init)
        self.seen, self.fail, self.open = [], fail, 0
        self.max_open = 0

    async def generate_request(self, req, _raw):
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        await asyncio.sleep(0.01)
        if self.fail and "top_k" in req.sampling_params:
            raise RuntimeError("scheduler said no")
        self.seen.append(req)
        yield {"text": "x"}
        self.open -= 1


@pytest.mark.sglang
def test_warmup_sends_every_request_at_once_and_logs():
    from domino_sglang.sglang_plugin.warmup import domino_warmup

    tm = _FakeTM()
    with logged("domino_sglang.sglang_plugin.warmup") as log:
        asyncio.run(domino_warmup("null", tm))
    want = warmup_requests(500, grammar=True)
    assert len(tm.seen) == len(want) and tm.max_open == len(want)
    assert [r.sampling_params for r in tm.seen] == [w["sampling_params"] for w in want]
    assert any(r.stream for r in tm.seen)
    assert any(m.startswith(f"domino warm-up: {len(want)} requests") for m in log)
    tm = _FakeTM(skip_tokenizer_init=True)  # no tokenizer: no JSON-schema request
    asyncio.run(domino_warmup("null", tm))
    assert not any(r.sampling_params.get("json_schema") for r in tm.seen) and tm.seen


@pytest.mark.sglang
def test_warmup_failure_is_a_warning():
    from domino_sglang.sglang_plugin.warmup import domino_warmup

    tm = _FakeTM(fail=True)
    with logged("domino_sglang.sglang_plugin.warmup") as log:
        asyncio.run(domino_warmup("null", tm))  # must not raise
    assert any("domino warm-up failed" in m and "2 of 10 requests failed, first a sampled one"
               in m and "scheduler said no" in m for m in log), log
    assert len(tm.seen) == 8  # the others still ran to the end
    with logged("domino_sglang.sglang_plugin.warmup") as log:
        asyncio.run(domino_warmup("prefill", _FakeTM()))
    assert any("skipped" in m for m in log)


@pytest.mark.sglang
def test_a_hung_warmup_is_given_up(monkeypatch):
    """A warm-up request that never ends must not keep the server from listening."""
    from domino_sglang.sglang_plugin import warmup

    class Hung(_FakeTM):
        async def generate_request(self, req, _raw):
            await asyncio.sleep(3600)
            yield {}

    monkeypatch.setattr(warmup, "TIMEOUT_S", 0.2)
    with logged("domino_sglang.sglang_plugin.warmup") as log:
        asyncio.run(asyncio.wait_for(warmup.domino_warmup("null", Hung()), 10))
    assert any("domino warm-up failed" in m and "not finished after 0 s" in m for m in log), log


@pytest.mark.sglang
@pytest.mark.parametrize("extra, want", [((), "domino"), (("--skip-server-warmup",), None),
                                         (("--warmups", "prefill_shapes"), "prefill_shapes")])
def test_warmup_is_on_by_default_for_domino(tiny_pair, extra, want):
    from sglang.srt.entrypoints import warmup as sglang_warmup
    from sglang.srt.server_args import prepare_server_args

    from domino_sglang.sglang_plugin import register

    assert register()
    assert "domino" in sglang_warmup._warmup_registry
    target, draft = tiny_pair
    sa = prepare_server_args(["--model-path", target, "--speculative-algorithm", "domino",
                              "--device", "cuda", "--skip-tokenizer-init",
                              "--speculative-draft-model-path", draft, *extra])
    assert sa.warmups == want


@pytest.mark.sglang
def test_warmup_requests_pass_sglangs_own_checks():
    """Every warm-up request is one SGLang accepts: its ``GenerateReqInput`` normalizes and its
    ``SamplingParams`` verify against the vocabulary (else the warm-up would only warn)."""
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.sampling.sampling_params import SamplingParams

    for r in warmup_requests(vocab_size=4096, grammar=True):
        req = GenerateReqInput(input_ids=r["input_ids"], stream=r["stream"],
                               sampling_params=dict(r["sampling_params"]))
        req.normalize_batch_and_arguments()
        sp = SamplingParams(**r["sampling_params"])
        sp.normalize(None)
        sp.verify(4096)
