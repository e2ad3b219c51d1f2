"""benchmarks/bench_hf.py on the CPU (the tiny pair, one short prompt): its results go through
the harness (JSON + Markdown with the provenance) and keep their older keys."""

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
bh = importlib.import_module("bench_hf")


def test_cpu_run_writes_json_and_markdown_with_provenance(tmp_path):
    rc = bh.main(["--device", "cpu", "--prompts", "random", "--num-prompts", "1",
                  "--max-new-tokens", "6", "--threads", "1", "--tag", "t",
                  "--commit", "beef123", "--out", str(tmp_path)])
    [jpath] = tmp_path.glob("hf_cpu_*_t.json")
    res = json.loads(jpath.read_text())
    assert res["meta"]["git"]["commit"] == "beef123" and res["provenance"] == res["meta"]
    assert "--commit beef123" in res["command"] == res["meta"]["command"]
    assert res["prompts_done"] == res["num_prompts"] == 1 and res["errors"] == {}
    for key in ("date", "device", "torch", "transformers", "python", "threads", "target",
                "draft", "max_new_tokens", "dtype", "verify_width", "head_impl",
                "greedy_mismatches", "mismatches", "all_mismatches_are_ties"):
        assert key in res, key
    assert set(res["results"]) == {"hf_generate", "plain_loop", "domino", "dflash_head_off"}
    assert res["results"]["hf_generate"]["tokens"] > 0
    # fp32: a mismatch is never a tie, so the exit code follows the greedy identity
    assert rc == (0 if res["greedy_mismatches"] == 0 else 1)
    md = jpath.with_suffix(".md").read_text()
    assert "- commit: beef123" in md and "| domino |" in md and "1 of 1 random prompts" in md


def test_speed_rows():
    zero = {"tokens": 0, "time_s": 0.0, "rounds": 0, "accepted": 0}
    rows = bh.speed_rows({"hf_generate": {**zero, "tokens": 10, "time_s": 2.0},
                          "plain_loop": dict(zero),
                          "domino": {"tokens": 10, "time_s": 1.0, "rounds": 4, "accepted": 8}})
    assert set(rows) == {"hf_generate", "domino"}  # a method that made no token is left out
    assert rows["domino"]["speedup_vs_hf_generate"] == 2.0 and rows["domino"]["tau"] == 2.0
    assert bh.speed_rows({"hf_generate": dict(zero)}) == {}
