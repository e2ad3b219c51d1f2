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


def test_tree_mode_on_sglang_flags_reaches_the_domino_server_only(tmp_path, monkeypatch,
                                                                 capsys):
    """--tree-topk K --tree-budget M: the Domino server gets SGLang's tree flags (topk K, the
    node count for M as --speculative-num-draft-tokens, the block size, no grammar backend);
    the plain server none of them; mixing with the deprecated DOMINO_TREE_* is refused."""
    import pytest

    from domino_sglang.core.tree import tree_num_nodes

    made = {}

    class Recording(FakeServer):
        def __init__(self, name, port, cmd, log_path, env=None):
            made[name] = list(cmd)
            super().__init__(name, port, cmd, log_path, env)

    monkeypatch.setattr(e2e, "Server", Recording)
    e2e.main(["--target", str(TINY / "target"), "--draft", str(TINY / "drafter-domino"),
              "--block-size", "16", "--tree-topk", "4", "--tree-budget", "32",
              "--out-dir", str(tmp_path), "--num-prompts", "2", "--num-sampled", "1",
              "--concurrency", "1", "--no-dflash-control", "--commit", "abc1234"])
    dom, plain = made["domino"], made["plain"]

    def value(cmd, flag):
        return cmd[cmd.index(flag) + 1]

    assert value(dom, "--speculative-eagle-topk") == "4"
    assert value(dom, "--speculative-num-draft-tokens") == str(tree_num_nodes(16, 4, 32))
    assert value(dom, "--speculative-dflash-block-size") == "16"
    assert value(dom, "--grammar-backend") == "none"
    assert not any(f.startswith("--speculative") for f in plain)
    with pytest.raises(SystemExit):
        e2e.main(["--target", str(TINY / "target"), "--draft", str(TINY / "drafter-domino"),
                  "--tree-topk", "4", "--domino-env", "DOMINO_TREE_TOPK=4",
                  "--out-dir", str(tmp_path / "x"), "--no-dflash-control"])
    assert "--tree-topk with --domino-env DOMINO_TREE_*" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything ran
