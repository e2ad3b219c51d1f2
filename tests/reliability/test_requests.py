"""The request table of the reliability and soak runs (domino_sglang.bench.reliability) and
the synchronous HTTP calls and outcome classification they use (domino_sglang.bench.client),
against a loopback fake server."""

import json
import sys
import urllib.error
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_server import FakeSGLang  # noqa: E402

from domino_sglang.bench.client import (Resp, call, call_stream, check_loopback,  # noqa: E402
                                        classify, error_message, flush_cache,
                                        flush_cache_response, http_json, loads_now,
                                        served_model_id)
from domino_sglang.bench.reliability import (BAD_REQUESTS, checks_markdown,  # noqa: E402
                                             judge_bad_case, json_output_ok,
                                             normal_request_ok)

ROOT = Path(__file__).resolve().parents[2]
CTX = {"prompt_ids": [1, 461, 202, 2594, 2, 202, 1, 460, 202], "vocab_size": 4096,
       "model": "m", "context_len": 2048, "long_ids": list(range(5, 2553))}


@pytest.fixture(scope="module")
def fake():
    s = FakeSGLang(domino=True)
    yield s
    s.close()


# ---- the bad-request list --------------------------------------------------------------------
def test_bad_request_list_is_complete_and_documented():
    names = [c.name for c in BAD_REQUESTS]
    assert len(names) == len(set(names)) >= 25
    doc = (ROOT / "docs/bad_inputs.md").read_text()
    for c in BAD_REQUESTS:
        assert f"`{c.name}`" in doc, c.name
        assert c.expect in ("reject", "accept", "either") and c.behavior
        assert c.endpoint in ("/generate", "/v1/completions", "/v1/chat/completions")
        p = c.build(CTX)
        if not isinstance(p, bytes):
            json.dumps(p)
    required = {"temperature_negative", "top_p_zero", "top_p_above_one",
                "max_tokens_beyond_context", "empty_prompt_completions",
                "prompt_longer_than_context", "stop_not_a_string", "n_greater_than_one",
                "logprobs_completions", "response_format_json_schema"}
    assert required <= set(names)


def test_builders_carry_the_bad_value():
    by = {c.name: c.build(CTX) for c in BAD_REQUESTS}
    assert by["temperature_negative"]["sampling_params"]["temperature"] < 0
    assert by["top_p_above_one"]["top_p"] > 1
    assert by["max_tokens_beyond_context"]["max_tokens"] > CTX["context_len"]
    assert len(by["prompt_longer_than_context"]["input_ids"]) > CTX["context_len"]
    assert by["token_id_out_of_vocab"]["input_ids"][-1] >= CTX["vocab_size"]
    assert by["empty_prompt_completions"]["prompt"] == ""
    assert by["n_greater_than_one"]["n"] == 2
    assert isinstance(by["malformed_json_body"], bytes)


# ---- classification and verdicts -------------------------------------------------------------
@pytest.mark.parametrize("resp, outcome", [
    (Resp(status=400, body={"error": {"message": "top_p must be in (0, 1]"}}), "rejected"),
    (Resp(status=422, body={"detail": [{"msg": "bad"}]}), "rejected"),
    (Resp(status=200, body={"error": {"message": "x"}}), "rejected_in_body"),
    (Resp(status=200, body={"text": "", "meta_info": {"finish_reason": {
        "type": "abort", "message": "no logprob", "status_code": 400}}}), "rejected_in_body"),
    (Resp(status=200, body={"meta_info": {"finish_reason": {
        "type": "abort", "message": "boom", "status_code": 500}}}), "server_error"),
    (Resp(status=503, body="down"), "server_error"),
    (Resp(timed_out=True, error="timeout"), "timeout"),
    (Resp(status=0, error="refused"), "connection_error"),
    (Resp(status=200, body={"text": "hi", "meta_info": {"finish_reason": {
        "type": "length"}}}), "ok"),
    (Resp(status=200, body={"text": "hi"}, aborted_by_client=True), "client_abort"),
])
def test_classify(resp, outcome):
    assert classify(resp) == outcome


def test_error_message_forms():
    assert "top_p" in error_message(Resp(status=400, body={
        "object": "error", "message": "top_p must be in (0, 1]"}))
    assert "bad" in error_message(Resp(status=422, body={"detail": [{"msg": "bad"}]}))
    assert error_message(Resp(timed_out=True, error="timeout after 3s")).startswith(
        "timeout")


def _case(name):
    return next(c for c in BAD_REQUESTS if c.name == name)


def test_judge_bad_case():
    c = _case("temperature_negative")
    rej = Resp(status=400, body={"error": {"message": "temperature must be >= 0"}})
    assert judge_bad_case(c, rej, True)["pass"]
    assert not judge_bad_case(c, rej, False)["pass"]  # the server stopped serving
    vague = Resp(status=400, body={"error": {"message": "bad request"}})
    j = judge_bad_case(c, vague, True)
    assert not j["pass"] and "lacks" in j["note"]
    assert not judge_bad_case(c, Resp(status=200, body={"text": "x"}), True)["pass"]
    assert not judge_bad_case(c, Resp(status=500, body="x"), True)["pass"]
    assert not judge_bad_case(c, Resp(timed_out=True, error="t"), True)["pass"]
    n2 = _case("n_greater_than_one")
    assert judge_bad_case(n2, Resp(status=200, body={"choices": [{}, {}]}), True)["pass"]
    assert not judge_bad_case(n2, Resp(status=200, body={"choices": [{}]}), True)["pass"]
    assert judge_bad_case(n2, rej, True)["pass"]  # 'either': a clear 4xx is fine too
    js = _case("response_format_json_schema")
    good = {"choices": [{"message": {"content": '{"answer": "yes", "score": 2}'},
                         "finish_reason": "stop"}]}
    bad = {"choices": [{"message": {"content": '{"answer": "perhaps", "score": 2}'},
                        "finish_reason": "stop"}]}
    assert judge_bad_case(js, Resp(status=200, body=good), True)["pass"]
    assert not judge_bad_case(js, Resp(status=200, body=bad), True)["pass"]


def test_json_output_ok():
    assert json_output_ok('{"answer": "no", "score": 0}', {"type": "stop"})[0]
    assert json_output_ok('{"answer": "no", "sc', {"type": "length"})[0]
    assert not json_output_ok('{"answer": "no"}', "stop")[0]
    assert not json_output_ok("nope", "stop")[0]


def test_check_loopback():
    check_loopback("http://127.0.0.1:1234")
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("http://10.0.0.1:1234")


# ---- http helpers against a loopback fake ----------------------------------------------------
def test_call_and_stream_against_the_fake(fake):
    r = call(fake.url + "/generate", {"input_ids": [1], "sampling_params": {
        "temperature": -1}})
    assert classify(r) == "rejected" and "temperature" in error_message(r)
    r = call(fake.url + "/generate", b"{bad")
    assert r.status == 400
    s = call_stream(fake.url + "/generate", {"input_ids": [1], "sampling_params": {
        "temperature": 0, "max_new_tokens": 4}})
    assert classify(s) == "ok" and s.chunks == 5
    a = call_stream(fake.url + "/generate", {"input_ids": [1], "sampling_params": {
        "temperature": 0}}, abort_after=2)
    assert classify(a) == "client_abort" and a.chunks == 2
    e = call_stream(fake.url + "/generate", {"input_ids": [1], "return_logprob": True})
    assert classify(e) == "rejected_in_body" and "logprob" in error_message(e)


def test_timeout_is_recorded_not_waited_on():
    slow = FakeSGLang(hang_s=3.0)
    try:
        r = call(slow.url + "/generate", {"input_ids": [1]}, timeout=0.5)
        assert classify(r) == "timeout" and r.elapsed_s < 2.5
        s = call_stream(slow.url + "/generate", {"input_ids": [1]}, timeout=0.5)
        assert classify(s) == "timeout"
    finally:
        slow.close()


def test_calls_around_a_run(fake):
    assert served_model_id(fake.url) == "fake-model"
    assert loads_now(fake.url + "/")["num_used_tokens"] == 0
    assert flush_cache(fake.url, tries=1)
    r = flush_cache_response(fake.url, tries=1)
    assert r.status == 200 and r.body == {"ok": True}
    assert normal_request_ok(fake.url, CTX, 5.0)
    assert http_json(fake.url + "/v1/models")["data"][0]["id"] == "fake-model"
    with pytest.raises(urllib.error.HTTPError):  # the raising shortcut raises on 4xx
        http_json(fake.url + "/generate", {"input_ids": [1], "sampling_params": {
            "temperature": -1}})


def test_calls_to_a_dead_server_report_and_give_up():
    dead = FakeSGLang()
    url = dead.url
    dead.close()
    r = call(url + "/generate", {"input_ids": [1]}, timeout=2)
    assert classify(r) == "connection_error" and error_message(r)
    assert served_model_id(url) is None
    assert "error" in loads_now(url)
    assert not flush_cache(url, tries=2, pause_s=0.01)
    assert flush_cache_response(url, tries=2, pause_s=0.01).status == 0
    assert not normal_request_ok(url, CTX, 2.0)


def test_checks_markdown():
    lines = checks_markdown({"a": True, "b": False, "c": None}, "TimeoutError: x")
    assert lines[0] == "Run error: `TimeoutError: x`"
    assert lines[-3:] == ["| a | PASS |", "| b | FAIL |", "| c | not measured |"]
    assert checks_markdown(None) == ["| check | result |", "| --- | --- |"]
