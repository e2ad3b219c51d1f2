"""CPU test of benchmarks/e2e_gpu.py: a whole run against loopback fake servers writes its
results through the harness (JSON + Markdown with the provenance) and keeps its legacy keys."""

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
e2e = importlib.import_module("e2e_gpu")
from fake_server import FakeServer  # noqa: E402

TINY = ROOT / "assets" / "domino-tiny"


def test_main_writes_json_and_markdown_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(e2e, "Server", FakeServer)
    rc = e2e.main(["--target", str(TINY / "target"), "--draft", str(TINY / "drafter-domino"),
                   "--out-dir", str(tmp_path), "--num-prompts", "4", "--num-sampled", "2",
                   "--concurrency", "2", "--no-dflash-control", "--commit", "abc1234-dirty"])
    res = json.loads(next(tmp_path.glob("e2e_*.json")).read_text())
    md = next(tmp_path.glob("e2e_*.md")).read_text()
    git = res["meta"]["git"]
    assert git["commit"] == "abc1234" and git["dirty"] is True  # '-dirty' from the sender
    assert res["git"] == git and res["versions"]["domino_sglang_commit"] == "abc1234"
    assert "--commit abc1234-dirty" in res["meta"]["command"] == res["command"]
    # the legacy keys are still written
    for key in ("args", "started", "host", "python", "device", "ready", "ready_s", "checks",
                "ok", "wall_s", "greedy_domino_vs_plain", "sampled_domino",
                "concurrent_streams_domino", "loads_domino", "server_info_domino"):
        assert key in res, key
    g = res["greedy_domino_vs_plain"]
    assert g["identical"] == g["total"] == 4  # the fake answers greedy requests alike
    assert res["sampled_domino"]["completed"] == 2
    # the fake reports no accept length: that check fails, so does the run
    assert res["checks"]["accept_length_reported_>1"] is False and not res["ok"] and rc == 1
    assert "- commit: abc1234 dirty=True" in md and "| greedy_mismatches_all_near_ties |" in md
    assert sorted(p.name for p in tmp_path.glob("e2e_server_*.log")) == [
        "e2e_server_domino.log", "e2e_server_plain.log"]
