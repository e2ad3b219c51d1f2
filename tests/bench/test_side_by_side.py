"""The side-by-side harness end to end against fake SGLang server processes (loopback), plus
its pure pieces: request sets, stats, ratios, memory plan, tie thresholds, provenance."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import side_by_side as script  # noqa: E402

from domino_sglang.bench import stats  # noqa: E402
from domino_sglang.bench import side_by_side as sbs  # noqa: E402
from domino_sglang.bench.harness import git_state  # noqa: E402
from domino_sglang.bench.systems import (Instance, plan_waves, mem_fraction_for,  # noqa: E402
                                         resolve_pair, ServerOpts, system_flags)
from domino_sglang.bench.ties import ulp  # noqa: E402
from _loopback import free_base_port  # noqa: E402


def _free_base_port(n=8):
    return free_base_port(n)


def test_stats_and_ratio():
    assert stats.median([3, 1, 2]) == 2 and stats.median([1, 2, 3, 4]) == 2.5
    assert stats.percentile([1, 2, 3, 4, 5], 20) == pytest.approx(1.8)
    s = stats.summarize([10, 12])
    assert (s.median, s.lo, s.hi, s.spread) == (11, 10, 12, "min-max")
    assert stats.summarize(range(10)).spread == "p20-p80"
    r = stats.ratio([150, 160], [100, 110])
    assert r["ratio"] == pytest.approx(155 / 105)
    assert r["lo"] == pytest.approx(150 / 110) and r["hi"] == pytest.approx(1.6)
    assert stats.fmt_ratio(r) == "1.48x [1.36-1.60]"
    assert stats.ratio([1.0], [])["ratio"] is None and stats.fmt_ratio(None) == "-"
    with pytest.raises(ValueError, match="NaN"):
        stats.median([float("nan")])


def test_ulp_thresholds():
    assert ulp(12.0, "bfloat16") == 2 ** -4 and ulp(-12.0, "bfloat16") == 2 ** -4
    assert ulp(16.0, "bfloat16") == 2 ** -3 and ulp(12.0, "float16") == 2 ** -7
    with pytest.raises(ValueError, match="dtype"):
        ulp(1.0, "int8")


def test_request_sets_fixed():
    prompts = [[1, 2], [3], [4, 5, 6]]
    a = sbs.request_set(prompts, 7, 16, ignore_eos=True)
    assert [r["input_ids"] for r in a] == [[1, 2], [3], [4, 5, 6], [1, 2], [3], [4, 5, 6], [1, 2]]
    assert all(r["sampling_params"] == {"max_new_tokens": 16, "temperature": 0.0,
                                        "ignore_eos": True} for r in a)
    assert sbs.set_digest(a) == sbs.set_digest(sbs.request_set(prompts, 7, 16, True))
    assert sbs.set_digest(a) != sbs.set_digest(sbs.request_set(prompts, 7, 17, True))
    assert [sbs.requests_for_level(c, 64, 4) for c in (1, 4, 16, 64)] == [64, 64, 64, 256]


def test_memory_plan_and_flags():
    need = {"ar": 24.0, "dflash": 28.0, "domino": 28.0, "ngram": 16.0}
    inst = [Instance(n) for n in ("ar", "dflash", "domino", "ngram")]
    waves = plan_waves(inst, need, 80.0)
    # AR stays up (counted in every wave); 24 + 28 + 28 > 0.87 x 80
    assert [[i.name for i in w] for w in waves] == [["ar", "dflash"], ["domino", "ngram"]]
    assert mem_fraction_for(52.0, 80.0) == pytest.approx(0.7)
    assert mem_fraction_for(80.0, 80.0) is None and mem_fraction_for(1.0, 80.0) == 0.3
    pair = resolve_pair("tiny")
    flags, env = system_flags("domino_tree", pair, ServerOpts(), 0.5)
    assert flags[flags.index("--speculative-eagle-topk") + 1] == "4"
    assert flags[flags.index("--speculative-num-draft-tokens") + 1] == "32" and env == {}
    flags, env = system_flags("domino_tree", pair, ServerOpts(tree_style="env"), 0.5)
    assert env == {"DOMINO_TREE_TOPK": "4", "DOMINO_TREE_BUDGET": "32"}
    _, env = system_flags("domino", pair, ServerOpts(), 0.5, simulate_acc_len=7.17)
    assert env == {"SGLANG_SIMULATE_ACC_LEN": "7.17"}
    with pytest.raises(ValueError, match="simulate"):
        system_flags("domino_tree", pair, ServerOpts(), 0.5, simulate_acc_len=4)


def test_git_state_override(monkeypatch):
    monkeypatch.setenv("DOMINO_COMMIT", "abc1234")
    g = git_state()
    assert g["commit"] == "abc1234" and g["commit_source"] == "DOMINO_COMMIT"
    assert g["dirty"] in (True, False, None)
    assert git_state("def5678")["commit_source"] == "--commit"
    # a commit that is not this tree's HEAD (a copied tree, stale .git): dirty is unknown here
    assert g["dirty"] is None and "stale .git" in g["warning"]
    # ... unless the sender said so (`git describe --always --dirty`)
    d = git_state("abc1234-dirty")
    assert d["commit"] == "abc1234" and d["dirty"] is True


def _run(tmp_path, monkeypatch, extra):
    logs = tmp_path / "fake_logs"
    logs.mkdir()
    monkeypatch.setenv("FAKE_LOG_DIR", str(logs))
    out = tmp_path / "out"
    argv = ["--pair", "tiny", "--levels", "1,4", "--min-requests", "8", "--per-slot", "3",
            "--max-new-tokens", "8", "--warmup-tokens", "3", "--eq-prompts", "12",
            "--eq-max-new-tokens", "24", "--eq-concurrency", "4", "--logit-magnitude", "12",
            "--gpu-mem-gb", "80", "--startup-timeout-s", "60", "--base-port",
            str(_free_base_port()), "--commit", "feedbee", "--out-dir", str(out),
            "--launcher", f"{sys.executable} {HERE / 'fake_sglang_server.py'}", *extra]
    rc = script.main(argv)
    files = sorted(out.glob("side_by_side*.json"))
    assert len(files) == 1 and files[0].with_suffix(".md").is_file()
    return rc, json.loads(files[0].read_text()), files[0].with_suffix(".md").read_text(), logs


def test_side_by_side_end_to_end(tmp_path, monkeypatch):
    rc, data, md, logs = _run(tmp_path, monkeypatch, [])
    meta = data["meta"]
    # provenance
    assert meta["git"]["commit"] == "feedbee" and meta["git"]["commit_source"] == "--commit"
    assert "dirty" in meta["git"] and "--levels" in meta["command"]
    assert set(meta["versions"]) >= {"torch", "triton", "sglang", "transformers"}
    assert "gpu" in meta and meta["date"]
    # the same fixed request set, repeats x per level, to every system
    measured = {}
    for f in logs.glob("*.jsonl"):
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        measured[f.stem] = Counter(json.dumps(r["input_ids"]) for r in rows
                                   if r["sampling_params"].get("max_new_tokens") == 8)
    assert set(measured) == {"ar", "ngram", "dflash", "domino", "domino_fixed",
                             "domino_tree-4x32"}  # the fake logs tree servers by shape
    # the adaptive server's last summary is kept and shown; the fixed one has none
    assert data["adaptive"]["domino"]["buckets"]["1"]["current"] == 16
    assert set(data["adaptive"]) == {"domino"} and "Adaptive verify width of `domino`" in md
    first = measured["ar"]
    assert sum(first.values()) == 2 * (8 + 12)  # 2 repeats x (8 requests at c=1, 12 at c=4)
    assert all(c == first for c in measured.values())
    assert set(data["request_sets"]) == {"1", "4"}
    # table: repeats, spread, ratio math from the raw repeats
    rows = {(r["level"], r["system"]): r for r in data["table"]}
    for level in (1, 4):
        ar = [x["output_tok_s"] for x in data["results"]["ar"][str(level)]]
        dom = [x["output_tok_s"] for x in data["results"]["domino"][str(level)]]
        df = [x["output_tok_s"] for x in data["results"]["dflash"][str(level)]]
        assert len(ar) == len(dom) == 2
        row = rows[(level, "domino")]
        assert row["x_vs_ar"]["ratio"] == pytest.approx(stats.median(dom) / stats.median(ar))
        assert row["x_vs_ar"]["lo"] == pytest.approx(min(a / b for a in dom for b in ar))
        assert row["x_vs_dflash"]["hi"] == pytest.approx(max(a / b for a in dom for b in df))
        assert row["tau"] == pytest.approx(8 / 3) and rows[(level, "ar")]["tau"] is None
        assert rows[(level, "ar")]["x_vs_ar"] is None
        assert row["output_tok_s"]["spread"] == "min-max"
    assert stats.fmt_ratio(rows[(1, "domino")]["x_vs_ar"]) in md
    # tie verdicts: domino's planted mismatches are 1-ulp ties, the tree's are not
    eq = data["equality"]
    assert eq["domino"]["mismatches"] > 0 and eq["domino"]["all_mismatches_are_ties"]
    assert eq["domino"]["max_gap_ulps"] == pytest.approx(1.0)
    assert eq["domino_tree"]["not_ties"] > 0 and not eq["domino_tree"]["all_mismatches_are_ties"]
    assert eq["dflash"]["identical"] == 12 and eq["dflash"]["mismatches"] == 0
    assert "stop" in eq["dflash"]["finish_types"]  # EOS honoured (some hit the length)
    assert eq["dflash"]["finish_reason_mismatch_on_identical"] == 0
    assert data["verdict"]["all_mismatches_are_ties"] is False
    assert rc == 1  # the tree's non-tie mismatch fails the run
    assert "| 1 | domino |" in md and "Greedy equality" in md


def test_side_by_side_simulated_and_budget(tmp_path, monkeypatch):
    rc, data, md, logs = _run(tmp_path, monkeypatch, [
        "--simulate-acc-len", "4,6", "--time-budget-s", "1"])
    assert "SIMULATED" in data["WARNING"] and "SIMULATED" in md
    assert {f.stem for f in logs.glob("*.jsonl")} == {
        "ar", "dflash@sim4", "domino@sim4", "dflash@sim6", "domino@sim6"}
    assert data["equality"] == {}
    # budget: level 1 runs (no estimate yet), level 4 is dropped and recorded
    assert [s["level"] for s in data["skipped"]] == [4]
    rows = {(r["level"], r["system"]): r for r in data["table"]}
    assert rows[(1, "domino@sim6")]["tau"] == pytest.approx(8 / 2)  # ceil(8 / 6) steps
    assert rows[(1, "domino@sim4")]["x_vs_dflash"]["ratio"] is not None
    assert rows[(4, "domino@sim4")]["status"] == "not run"


def test_dry_run_prints_commands(capsys):
    assert script.main(["--dry-run", "--gpu-mem-gb", "80"]) == 0
    out = capsys.readouterr().out
    assert out.count("sglang.launch_server") == 6 and "DOMINO_ADAPTIVE=0" in out and "--speculative-eagle-topk 4" in out


def test_paired_tau_ratio_interval():
    # identical drafters: ratio 1 with a degenerate interval
    pairs = [(128, 40 + i % 7) for i in range(50)]
    r = stats.paired_tau_ratio(pairs, pairs, n_boot=300)
    assert r["ratio"] == pytest.approx(1.0) and r["lo"] == pytest.approx(1.0) \
        and r["hi"] == pytest.approx(1.0)
    # one drafter needs 10 % fewer rounds on every prompt: ratio 1/0.9, tight interval above 1
    fewer = [(t, n * 0.9) for t, n in pairs]
    r = stats.paired_tau_ratio(fewer, pairs, n_boot=300)
    assert r["ratio"] == pytest.approx(1 / 0.9) and 1.0 < r["lo"] <= r["ratio"] <= r["hi"]
    # a difference on a few prompts only: the interval is wide and contains the point estimate
    mixed = [(t, n * (0.5 if i < 3 else 1.0)) for i, (t, n) in enumerate(pairs)]
    r = stats.paired_tau_ratio(mixed, pairs, n_boot=500, seed=1)
    assert r["lo"] < r["ratio"] < r["hi"] and r["hi"] - r["lo"] > 0.02
    with pytest.raises(ValueError, match="same prompts"):
        stats.paired_tau_ratio(pairs[:3], pairs)
    assert stats.paired_tau_ratio([], [])["ratio"] is None


def test_side_by_side_tree_sweep(tmp_path, monkeypatch):
    """--tree-configs: one tree server per TOPKxBUDGET (SGLang's flags), each measured on the
    same request sets, with its ratio to chain Domino, and the fastest per level in the
    Markdown (the fake tree accepts 2 + topk // 2 tokens per round: 4x32 beats 2x16)."""
    rc, data, md, logs = _run(tmp_path, monkeypatch, [
        "--systems", "ar", "domino", "domino_tree", "--tree-configs", "2x16,4x32"])
    names = [s["name"] for w in data["plan"]["waves"] for s in w["servers"]]
    assert names == ["ar", "domino", "domino_tree-2x16", "domino_tree-4x32"]
    flags = {s["name"]: s["flags"] for w in data["plan"]["waves"] for s in w["servers"]}
    for name, k, n in (("domino_tree-2x16", "2", "16"), ("domino_tree-4x32", "4", "32")):
        f = flags[name]
        assert f[f.index("--speculative-eagle-topk") + 1] == k
        assert f[f.index("--speculative-num-draft-tokens") + 1] == n
        assert data["plan"]["server_memory_gb"][name]["head_gb"] > 0
    assert {f.stem for f in logs.glob("*.jsonl")} == {
        "ar", "domino", "domino_tree-2x16", "domino_tree-4x32"}
    rows = {(r["level"], r["system"]): r for r in data["table"]}
    for level in (1, 4):
        chain = [x["output_tok_s"] for x in data["results"]["domino"][str(level)]]
        for name in ("domino_tree-2x16", "domino_tree-4x32"):
            tree = [x["output_tok_s"] for x in data["results"][name][str(level)]]
            assert rows[(level, name)]["x_vs_chain"]["ratio"] == pytest.approx(
                stats.median(tree) / stats.median(chain))
        assert rows[(level, "domino")].get("x_vs_chain") is None
        assert rows[(level, "domino_tree-4x32")]["tau"] == pytest.approx(8 / 2)  # ceil(8/4)
    best = sbs.best_trees(data["table"])
    assert [b["level"] for b in best] == [1, 4] and all(b["of"] == 2 for b in best)
    for b in best:
        medians = {n: rows[(b["level"], n)]["output_tok_s"]["median"]
                   for n in ("domino_tree-2x16", "domino_tree-4x32")}
        assert b["system"] == max(medians, key=medians.get)
    assert "fastest tree configuration per level" in md and "(of 2)" in md
    assert set(data["equality"]) == {"domino", "domino_tree-2x16", "domino_tree-4x32"}


def test_tree_configs_are_checked():
    from domino_sglang.bench.systems import parse_tree_configs

    assert parse_tree_configs("2x16, 4X32") == [(2, 16), (4, 32)]
    for bad, why in (("4-32", "TOPKxBUDGET"), ("1x16", "topk >= 2"), ("4x32,4x32", "twice"),
                     ("", "no tree configuration")):
        with pytest.raises(ValueError, match=why):
            parse_tree_configs(bad)
    with pytest.raises(SystemExit):
        script.parse(["--systems", "ar", "domino", "--tree-configs", "2x16"])
    with pytest.raises(SystemExit):
        script.parse(["--tree-configs", "0x16"])


def test_side_by_side_adaptive_trace(tmp_path, monkeypatch):
    """--adaptive-trace: the adaptive Domino server gets DOMINO_ADAPTIVE_TRACE in --out-dir, the
    report summarises its rounds by bucket, width and run; other servers get no trace."""
    rc, data, md, logs = _run(tmp_path, monkeypatch, [
        "--systems", "ar", "domino", "domino_fixed", "--adaptive-trace"])
    envs = {s["name"]: s["env"] for w in data["plan"]["waves"] for s in w["servers"]}
    assert envs["domino"]["DOMINO_ADAPTIVE_TRACE"].endswith("adaptive_trace_domino.jsonl")
    assert "DOMINO_ADAPTIVE_TRACE" not in envs["ar"] | envs["domino_fixed"]
    tr = data["adaptive_trace"]["domino"]
    assert set(data["adaptive_trace"]) == {"domino"} and tr["rounds"] > 0
    assert set(tr["buckets"]["1"]) == {"8", "16"} and set(tr["buckets"]["1"]["16"]) == {"1", "2",
                                                                                        "3+"}
    assert "Per-round trace of `domino`" in md and "| 1 | 16 | 3+ |" in md


def test_level_estimate_scales_with_concurrency():
    """The time estimate of a level from the nearest measured level below it, throughput
    scaled by sqrt(level ratio) (it used to apply c=1's throughput to c=2 and skip levels 2-64
    of two 8B runs), or, with only higher levels measured (levels run in the given order),
    scaled down in proportion; None until every system has a history."""
    hist = {"ar": {1: 100.0}, "domino": {1: 200.0}}
    one = sbs.estimate_level_s(1, 64, 32, hist, ["ar", "domino"], 2, warm_s=0.0)
    assert one == pytest.approx(2 * 64 * 32 / 100 + 2 * 64 * 32 / 200)
    four = sbs.estimate_level_s(4, 64, 32, hist, ["ar", "domino"], 2, warm_s=0.0)
    assert four == pytest.approx(one / 2)  # sqrt(4 / 1)
    high = {"ar": {16: 800.0}}
    assert sbs.estimate_level_s(4, 64, 32, high, ["ar"], 2, warm_s=0.0) == \
        pytest.approx(2 * 64 * 32 / 200)  # 800 x 4 / 16
    high["ar"][2] = 150.0  # a measured level below wins: 150 x sqrt(2)
    assert sbs.estimate_level_s(4, 64, 32, high, ["ar"], 2, warm_s=0.0) == \
        pytest.approx(2 * 64 * 32 / (150 * 2 ** 0.5))
    assert sbs.estimate_level_s(4, 64, 32, hist, ["ar", "ngram"], 2) is None


def test_levels_run_in_the_given_order(tmp_path, monkeypatch):
    """--levels 4,1: level 4 is measured first (the fake servers' logs keep the order), the
    table lists level 1 first."""
    rc, data, md, logs = _run(tmp_path, monkeypatch, ["--levels", "4,1", "--systems", "ar",
                                                      "domino"])
    assert data["plan"]["levels"] == [4, 1]
    assert list(data["request_sets"]) == ["4", "1"]  # filled as each level starts
    rows = [json.loads(x) for x in (logs / "domino.jsonl").read_text().splitlines()]
    measured = [r for r in rows if r["sampling_params"].get("max_new_tokens") == 8]
    assert len(measured) == 2 * (12 + 8)
    assert [r["level"] for r in data["table"]] == [1, 1, 4, 4]


def test_equality_outputs_are_fetched_one_server_at_a_time(monkeypatch):
    """Concurrent equality requests to several servers of one GPU slow each other's rounds and
    teach the adaptive policy contended costs; the servers must be asked in turn."""
    import asyncio

    live, log = set(), []

    class FakeClient:
        def __init__(self, url, timeout):
            self.url = url

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

    async def fake_loop(client, requests, conc):
        live.add(client.url)
        log.append(len(live))
        await asyncio.sleep(0.01)
        live.discard(client.url)

        class R:
            results = [client.url] * len(requests)
        return R()

    monkeypatch.setattr(sbs, "Client", FakeClient)
    monkeypatch.setattr(sbs, "closed_loop", fake_loop)
    urls = {"ar": "u0", "dflash": "u1", "domino": "u2"}
    outs = asyncio.run(sbs._greedy_all(urls, [{}, {}], 16, 5.0))
    assert log == [1, 1, 1]
    assert outs == {"ar": ["u0", "u0"], "dflash": ["u1", "u1"], "domino": ["u2", "u2"]}


def test_prefill_probe_sends_one_token_requests_to_each_server(tmp_path, monkeypatch):
    rc, data, md, logs = _run(tmp_path, monkeypatch, ["--prefill-probe", "5",
                                                      "--systems", "ar", "domino"])
    probe = data["prefill_probe"]
    assert set(probe) == {"ar", "domino"}
    for n, r in probe.items():
        assert r["requests"] == 5 and r["completed"] == 5 and r["latency_p50_ms"] > 0
        rows = [json.loads(x) for x in (logs / f"{n}.jsonl").read_text().splitlines()]
        one = [r_ for r_ in rows if r_["sampling_params"].get("max_new_tokens") == 1
               and not r_.get("return_logprob")]  # not the tie lookups
        assert len(one) == 5 + 4  # the probe and its warm-up
    assert "Prefill probe" in md and "| domino | 5 | 5 |" in md
    assert script.parse(["--prefill-probe", "0"]).prefill_probe == 0
    with pytest.raises(SystemExit):
        script.parse(["--prefill-probe", "-1"])
