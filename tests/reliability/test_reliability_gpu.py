"""CPU tests of benchmarks/reliability_gpu.py: request builders, outcome classification,
verdicts, statistics, and a whole run against two loopback fake servers."""

import importlib
import json
import math
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).parent))
rg = importlib.import_module("reliability_gpu")
from fake_server import PROBS, FakeSGLang  # noqa: E402

CTX = {"prompt_ids": [1, 461, 202, 2594, 2, 202, 1, 460, 202], "vocab_size": 4096,
       "model": "m", "context_len": 2048, "long_ids": list(range(5, 2553))}


@pytest.fixture(scope="module")
def fake():
    s = FakeSGLang(domino=True)
    yield s
    s.close()


# ---- the bad-request list --------------------------------------------------------------------
def test_bad_request_list_is_complete_and_documented():
    names = [c.name for c in rg.BAD_REQUESTS]
    assert len(names) == len(set(names)) >= 25
    doc = (ROOT / "docs/bad_inputs.md").read_text()
    for c in rg.BAD_REQUESTS:
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
    by = {c.name: c.build(CTX) for c in rg.BAD_REQUESTS}
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
    (rg.Resp(status=400, body={"error": {"message": "top_p must be in (0, 1]"}}), "rejected"),
    (rg.Resp(status=422, body={"detail": [{"msg": "bad"}]}), "rejected"),
    (rg.Resp(status=200, body={"error": {"message": "x"}}), "rejected_in_body"),
    (rg.Resp(status=200, body={"text": "", "meta_info": {"finish_reason": {
        "type": "abort", "message": "no logprob", "status_code": 400}}}), "rejected_in_body"),
    (rg.Resp(status=200, body={"meta_info": {"finish_reason": {
        "type": "abort", "message": "boom", "status_code": 500}}}), "server_error"),
    (rg.Resp(status=503, body="down"), "server_error"),
    (rg.Resp(timed_out=True, error="timeout"), "timeout"),
    (rg.Resp(status=0, error="refused"), "connection_error"),
    (rg.Resp(status=200, body={"text": "hi", "meta_info": {"finish_reason": {
        "type": "length"}}}), "ok"),
    (rg.Resp(status=200, body={"text": "hi"}, aborted_by_client=True), "client_abort"),
])
def test_classify(resp, outcome):
    assert rg.classify(resp) == outcome


def test_error_message_forms():
    assert "top_p" in rg.error_message(rg.Resp(status=400, body={
        "object": "error", "message": "top_p must be in (0, 1]"}))
    assert "bad" in rg.error_message(rg.Resp(status=422, body={"detail": [{"msg": "bad"}]}))
    assert rg.error_message(rg.Resp(timed_out=True, error="timeout after 3s")).startswith(
        "timeout")


def _case(name):
    return next(c for c in rg.BAD_REQUESTS if c.name == name)


def test_judge_bad_case():
    c = _case("temperature_negative")
    rej = rg.Resp(status=400, body={"error": {"message": "temperature must be >= 0"}})
    assert rg.judge_bad_case(c, rej, True)["pass"]
    assert not rg.judge_bad_case(c, rej, False)["pass"]  # the server stopped serving
    vague = rg.Resp(status=400, body={"error": {"message": "bad request"}})
    j = rg.judge_bad_case(c, vague, True)
    assert not j["pass"] and "lacks" in j["note"]
    assert not rg.judge_bad_case(c, rg.Resp(status=200, body={"text": "x"}), True)["pass"]
    assert not rg.judge_bad_case(c, rg.Resp(status=500, body="x"), True)["pass"]
    assert not rg.judge_bad_case(c, rg.Resp(timed_out=True, error="t"), True)["pass"]
    n2 = _case("n_greater_than_one")
    assert rg.judge_bad_case(n2, rg.Resp(status=200, body={"choices": [{}, {}]}), True)["pass"]
    assert not rg.judge_bad_case(n2, rg.Resp(status=200, body={"choices": [{}]}), True)["pass"]
    assert rg.judge_bad_case(n2, rej, True)["pass"]  # 'either': a clear 4xx is fine too
    js = _case("response_format_json_schema")
    good = {"choices": [{"message": {"content": '{"answer": "yes", "score": 2}'},
                         "finish_reason": "stop"}]}
    bad = {"choices": [{"message": {"content": '{"answer": "perhaps", "score": 2}'},
                        "finish_reason": "stop"}]}
    assert rg.judge_bad_case(js, rg.Resp(status=200, body=good), True)["pass"]
    assert not rg.judge_bad_case(js, rg.Resp(status=200, body=bad), True)["pass"]


def test_json_output_ok():
    assert rg.json_output_ok('{"answer": "no", "score": 0}', {"type": "stop"})[0]
    assert rg.json_output_ok('{"answer": "no", "sc', {"type": "length"})[0]
    assert not rg.json_output_ok('{"answer": "no"}', "stop")[0]
    assert not rg.json_output_ok("nope", "stop")[0]


# ---- statistics ------------------------------------------------------------------------------
def test_chi2_sf_known_values():
    assert rg.chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-5)
    assert rg.chi2_sf(18.307038, 10) == pytest.approx(0.05, abs=1e-5)
    assert rg.chi2_sf(9.0, 9) == pytest.approx(0.4372, abs=1e-3)
    assert rg.chi2_sf(200.0, 5) < 1e-30 and rg.chi2_sf(0.0, 3) == 1.0


def test_chi_square_gof_accepts_the_right_distribution_and_rejects_a_wrong_one():
    rng = random.Random(0)
    toks, ps = list(PROBS), list(PROBS.values())
    probs = dict(PROBS)
    good = {}
    for t in rng.choices(toks, weights=ps, k=2000):
        good[t] = good.get(t, 0) + 1
    assert rg.chi_square_gof(good, probs)["p_value"] > 1e-3
    skew = {}
    for t in rng.choices(toks, weights=[0.3, 0.3, 0.15, 0.1, 0.1, 0.05], k=2000):
        skew[t] = skew.get(t, 0) + 1
    assert rg.chi_square_gof(skew, probs)["p_value"] < 1e-6
    # a token the target gives ~no mass shows up: 'other' bin blows up
    assert rg.chi_square_gof({**good, 999: 30}, probs)["p_value"] < 1e-6
    assert rg.chi_square_gof({}, probs)["p_value"] is None


def test_pit_is_uniform_under_the_null_only():
    rng = random.Random(1)
    probs = {0: 0.5, 1: 0.3, 2: 0.15}  # 0.05 outside the top-k
    toks = [0, 1, 2, 77]
    us = [rg.pit_value(probs, t, rng.random())
          for t in rng.choices(toks, weights=[0.5, 0.3, 0.15, 0.05], k=4000)]
    assert rg.uniformity_test(us)["p_value"] > 1e-3
    us_bad = [rg.pit_value(probs, t, rng.random())
              for t in rng.choices(toks, weights=[0.7, 0.2, 0.05, 0.05], k=4000)]
    assert rg.uniformity_test(us_bad)["p_value"] < 1e-6


def test_parse_top_logprobs():
    entry = [[math.log(0.5), 7, None], (math.log(0.25), 3, "a"),
             {"logprob": math.log(0.125), "token_id": 9}, None]
    assert rg.parse_top_logprobs(entry) == pytest.approx({7: 0.5, 3: 0.25, 9: 0.125})


def test_compare_greedy():
    c = rg.compare_greedy([[1, 2, 3], [4, 5], None, [7]], [[1, 2, 3], [4, 6], [1], [7, 8]])
    assert c["identical"] == 1 and c["failed"] == 1 and c["num_different"] == 2
    assert c["first_differences"][0] == {"prompt": 1, "position": 1, "len_ref": 2,
                                         "len_other": 2}


def test_mixed_requests_shape():
    prompts = [[1, 2, 3], [4, 5], [6]]
    reqs = rg.mixed_requests(prompts, 4, 3, 2, 2, 16)
    kinds = [r["kind"] for r in reqs]
    assert kinds.count("greedy") == 3 and kinds.count("sampled") == 3
    assert kinds.count("json_greedy") + kinds.count("json_sampled") == 2
    assert all(r.get("abort_after") for r in reqs if r["kind"] == "abort")
    json.dumps([r["payload"] for r in reqs])


def test_verdict_all_none_when_nothing_ran():
    args = rg.build_parser().parse_args([])
    checks = rg.verdict({}, args)
    assert checks and all(v is None for v in checks.values())


def test_parser_defaults_fit_one_h200_call():
    args = rg.build_parser().parse_args([])
    assert args.budget_s <= 560 and args.min_identical >= 200
    assert args.dtype == "bfloat16" and args.request_timeout <= 60
    assert len(rg.load_prompts(Path(args.prompts), args.num_prompts)) >= args.min_identical
    assert Path(args.target, "config.json").is_file() and Path(args.draft, "config.json").is_file()
    flags = rg.server_args("T", "bfloat16", 0.3, 1000, 0)
    assert "--skip-tokenizer-init" not in flags and "--attention-backend" in flags


def test_check_loopback():
    rg.check_loopback("http://127.0.0.1:1234")
    with pytest.raises(ValueError, match="loopback"):
        rg.check_loopback("http://10.0.0.1:1234")


# ---- http helpers against a loopback fake ----------------------------------------------------
def test_call_and_stream_against_the_fake(fake):
    r = rg.call(fake.url + "/generate", {"input_ids": [1], "sampling_params": {
        "temperature": -1}})
    assert rg.classify(r) == "rejected" and "temperature" in rg.error_message(r)
    r = rg.call(fake.url + "/generate", b"{bad")
    assert r.status == 400
    s = rg.call_stream(fake.url + "/generate", {"input_ids": [1], "sampling_params": {
        "temperature": 0, "max_new_tokens": 4}})
    assert rg.classify(s) == "ok" and s.chunks == 5
    a = rg.call_stream(fake.url + "/generate", {"input_ids": [1], "sampling_params": {
        "temperature": 0}}, abort_after=2)
    assert rg.classify(a) == "client_abort" and a.chunks == 2
    e = rg.call_stream(fake.url + "/generate", {"input_ids": [1], "return_logprob": True})
    assert rg.classify(e) == "rejected_in_body" and "logprob" in rg.error_message(e)


def test_timeout_is_recorded_not_waited_on():
    slow = FakeSGLang(hang_s=3.0)
    try:
        r = rg.call(slow.url + "/generate", {"input_ids": [1]}, timeout=0.5)
        assert rg.classify(r) == "timeout" and r.elapsed_s < 2.5
        s = rg.call_stream(slow.url + "/generate", {"input_ids": [1]}, timeout=0.5)
        assert rg.classify(s) == "timeout"
    finally:
        slow.close()


# ---- a whole run against two fakes -----------------------------------------------------------
class _FakeServer:
    fakes = {}

    def __init__(self, name, port, cmd, log_path):
        self.name = name
        self.fake = FakeSGLang(domino=name == "domino")
        self.url, self.ready_s, self.proc = self.fake.url, 0.0, None
        self.log_path = Path(log_path)

    def start(self):
        self.log_path.write_text("fake\n")

    def wait_ready(self, timeout):
        return True

    def stop(self):
        self.fake.close()


def test_main_runs_every_phase_and_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(rg, "Server", _FakeServer)
    rc = rg.main(["--out-dir", str(tmp_path), "--num-prompts", "12", "--min-identical", "10",
                  "--greedy-max-tokens", "8", "--num-aborts", "4", "--mixed-greedy", "4",
                  "--mixed-sampled", "3", "--mixed-json", "2", "--mixed-aborts", "2",
                  "--dist-samples", "600", "--dist-concurrency", "8", "--pit-samples", "40",
                  "--pit-tokens", "4", "--top-logprobs", "10", "--request-timeout", "5"])
    res = json.loads(next(tmp_path.glob("reliability_*.json")).read_text())
    assert not [k for k in res if k.startswith("error")], res
    assert len(res["bad_requests"]) == len(rg.BAD_REQUESTS)
    assert all(r["follow_up_ok"] for r in res["bad_requests"])
    c = res["checks"]
    assert c["greedy_identical>=10"] and c["mixed_greedy_identical"] and c["mixed_json_valid"]
    assert c["aborts_no_crash_and_drained"] and c["kv_tokens_zero_at_end"]
    assert c["first_token_chi_square"] and c["pit_drafted_positions"]
    assert res["distribution"]["first_token_plain"]["p_value"] > 1e-3
    assert c["servers_alive_no_scheduler_exceptions"] is False  # fakes have no process
    assert rc == 1
    md = next(tmp_path.glob("reliability_*.md")).read_text()
    assert "| bad_requests_all_pass |" in md and "temperature_negative" in md
