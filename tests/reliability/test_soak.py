"""CPU tests of benchmarks/soak.py: request mix, error classes, memory trend, and a short
bounded soak against a loopback fake server that must stop by itself."""

import importlib
import json
import random
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).parent))
soak = importlib.import_module("soak")
from fake_server import FakeSGLang  # noqa: E402

CTX = {"prompt_ids": [1, 2, 3], "vocab_size": 4096, "model": "m", "context_len": 2048,
       "long_ids": list(range(5, 2600))}


def test_every_kind_builds_a_request():
    rng = random.Random(0)
    for kind in soak.KINDS:
        for _ in range(20):
            rq = soak.build_request(kind, rng, [[1, 2, 3], [4, 5]], CTX)
            assert rq["endpoint"].startswith("/")
            if not isinstance(rq["payload"], bytes):
                json.dumps(rq["payload"])
            if kind == "bad":
                assert rq["expect_reject"]
            if kind == "long":
                assert len(rq["payload"]["input_ids"]) + 64 <= CTX["context_len"]
    with pytest.raises(ValueError):
        soak.build_request("nope", rng, [[1]], CTX)
    kinds = {soak.pick_kind(rng) for _ in range(500)}
    assert kinds == set(soak.KINDS)


@pytest.mark.parametrize("kind, outcome, expect, cls", [
    ("bad", "rejected", True, "expected_4xx"),
    ("bad", "rejected_in_body", True, "expected_4xx"),
    ("bad", "ok", True, "unexpected_accept"),
    ("bad", "server_error", True, "server_error"),
    ("greedy", "rejected", False, "unexpected_4xx"),
    ("greedy", "timeout", False, "timeout"),
    ("abort", "client_abort", False, "client_abort"),
    ("stream", "client_abort", False, "unexpected_client_abort"),
    ("sampled", "ok", False, "ok"),
])
def test_error_class(kind, outcome, expect, cls):
    assert soak.error_class(kind, outcome, expect) == cls


def test_memory_trend():
    flat = soak.memory_trend([100.0] * 3 + [1000.0] * 20)  # warm-up dropped
    assert flat["growth"] == 0.0
    leak = soak.memory_trend([1000.0 + 20 * i for i in range(40)])
    assert leak["growth"] > 0.05
    assert soak.memory_trend([None, 1.0])["growth"] is None


def test_process_group_rss_of_this_process():
    import os

    rss = soak.process_group_rss_mb(os.getpgid(0))
    assert rss is None or rss > 1


def test_loopback_only(tmp_path):
    rc = soak.main(["--base-url", "http://192.0.2.1:30000", "--duration-s", "1",
                    "--out-dir", str(tmp_path)])
    assert rc == 1
    res = json.loads(next(tmp_path.glob("soak_*.json")).read_text())
    assert "loopback" in res["error"] and "commit" in res["meta"]["git"]
    assert "Run error:" in next(tmp_path.glob("soak_*.md")).read_text()


def test_short_soak_stops_by_itself(tmp_path):
    fake = FakeSGLang()
    try:
        t0 = time.time()
        rc = soak.main(["--base-url", fake.url, "--duration-s", "3", "--concurrency", "4",
                        "--sample-every", "1", "--request-timeout", "5",
                        "--out-dir", str(tmp_path), "--commit", "0123abc-dirty"])
        assert time.time() - t0 < 20
    finally:
        fake.close()
    res = json.loads(next(tmp_path.glob("soak_*.json")).read_text())
    s = res["summary"]
    assert s["requests"] > 20 and len(s["samples"]) >= 3
    assert s["checks"]["stopped_by_itself"] and s["checks"]["kv_tokens_zero_after_flush"]
    assert s["checks"]["no_crash"] and s["checks"]["memory_steady"]
    # the fake validates only the temperature: other bad requests are 'unexpected_accept'
    assert s["by_class"].get("ok", 0) > 0
    assert set(s["by_class"]) <= {"ok", "expected_4xx", "client_abort", "unexpected_accept"}
    assert rc == (0 if s["checks"]["no_unexpected_errors"] else 1)
    md = next(tmp_path.glob("soak_*.md")).read_text()
    assert "| no_crash |" in md and "- commit: 0123abc dirty=True" in md
    # the harness's provenance: the commit passed ('-dirty': the sender's tree was dirty)
    assert res["meta"]["git"]["commit"] == "0123abc" and res["meta"]["git"]["dirty"] is True
    assert res["git"] == res["meta"]["git"] and res["partial"] is False
    assert res["command"] == res["meta"]["command"] and "--duration-s 3" in res["command"]
    # when each kind first got an answer, and when errors happened (a start-up stall shows)
    assert set(s["first_ok_s"]) >= {"greedy", "sampled"}
    assert all(0 <= v <= 5 for v in s["first_ok_s"].values())
    assert sum(s["errors_by_minute"].values()) == sum(
        n for c, n in s["by_class"].items() if c not in soak.BENIGN)
    assert "first benign answer per kind" in md
