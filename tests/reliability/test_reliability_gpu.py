"""CPU tests of benchmarks/reliability_gpu.py: greedy comparison, the mixed burst, verdicts,
and a whole run against two loopback fake servers (the request table, the HTTP calls and the
statistics it uses are tested with their modules: test_requests.py, test_dist.py)."""

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).parent))
rg = importlib.import_module("reliability_gpu")
from fake_server import FakeServer  # noqa: E402

from domino_sglang.bench.reliability import BAD_REQUESTS  # noqa: E402
from domino_sglang.bench.side_by_side import load_prompt_ids  # noqa: E402


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
    assert len(load_prompt_ids(Path(args.prompts))) >= args.min_identical
    assert Path(args.target, "config.json").is_file() and Path(args.draft, "config.json").is_file()


# ---- a whole run against two fakes -----------------------------------------------------------
def test_main_runs_every_phase_and_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(rg, "Server", FakeServer)
    rc = rg.main(["--out-dir", str(tmp_path), "--num-prompts", "12", "--min-identical", "10",
                  "--greedy-max-tokens", "8", "--num-aborts", "4", "--mixed-greedy", "4",
                  "--mixed-sampled", "3", "--mixed-json", "2", "--mixed-aborts", "2",
                  "--dist-samples", "600", "--dist-concurrency", "8", "--pit-samples", "40",
                  "--pit-tokens", "4", "--top-logprobs", "10", "--request-timeout", "5",
                  "--commit", "0123abc"])
    res = json.loads(next(tmp_path.glob("reliability_*.json")).read_text())
    assert not [k for k in res if k.startswith("error") and k != "errors"], res
    assert res["errors"] == {}, res["errors"]
    # the harness's provenance: the commit passed, the command; the legacy keys agree
    assert res["meta"]["git"]["commit"] == "0123abc" and res["git"]["commit"] == "0123abc"
    assert "--commit 0123abc" in res["meta"]["command"] and res["versions"]["torch"]
    assert sorted(p.name.split("_server_")[1] for p in tmp_path.glob("reliability_*_server_*"))\
        == ["domino.log", "plain.log"]
    assert len(res["bad_requests"]) == len(BAD_REQUESTS)
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
    assert "- commit: 0123abc" in md
