"""benchmarks/adaptive_trace.py: the per-round trace summarised by bucket, width and position
in a run of one width."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import adaptive_trace as script  # noqa: E402


def test_summary_groups_rounds_by_bucket_width_and_run(tmp_path, capsys):
    recs = [{"t": 0, "bs": 2, "w": 16, "ms": 4.0, "fwd_ms": 2.0, "steady": False, "run": 0},
            {"t": 1, "bs": 2, "w": 16, "ms": 3.5, "fwd_ms": 1.9, "steady": True, "run": 1},
            {"t": 2, "bs": 2, "w": 16, "ms": 3.0, "fwd_ms": 1.8, "steady": True, "run": 2},
            {"t": 3, "bs": 2, "w": 16, "ms": 2.8, "fwd_ms": 1.8, "steady": True, "run": 3},
            {"t": 4, "bs": 2, "w": 16, "ms": 2.6, "fwd_ms": 1.8, "steady": True, "run": 4},
            {"t": 5, "interrupt": True},
            {"t": 6, "bs": 3, "w": 8, "ms": 2.0, "fwd_ms": None, "steady": False, "run": 0}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "s.json"
    assert script.main([str(path), "--out", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["rounds"] == 6 and s["interrupts"] == 1
    w16 = s["buckets"]["2"]["16"]
    assert set(w16) == {"0", "1", "2", "3+"} and w16["3+"]["n"] == 2
    assert w16["3+"]["ms"]["median"] == pytest.approx(2.7)
    assert s["buckets"]["4"]["8"]["0"]["fwd_ms"] is None  # bs 3 -> bucket 4
    md = capsys.readouterr().out
    assert "| 2 | 16 | 3+ | 2 | 2.700" in md and "| 4 | 8 | 0 | 1 | 2.000" in md


def test_bad_input_is_named(tmp_path):
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "none.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"w": 1}\nnot json\n')
    with pytest.raises(SystemExit):
        script.main([str(bad)])


def test_interrupt_gaps_time_the_forward_between_rounds():
    # rounds of 10 ms; the last one before the prefill (t=0.02) is unrecorded; prefill at
    # t=0.035, next round at t=0.060; a double interrupt is not a lone one and is skipped
    recs = [{"t": 0.000, "bs": 1, "w": 16, "ms": 10.0, "run": 1},
            {"t": 0.010, "bs": 1, "w": 16, "ms": 10.0, "run": 2},
            {"t": 0.035, "interrupt": True},
            {"t": 0.060, "bs": 1, "w": 16, "ms": 10.0, "run": 3},
            {"t": 0.090, "interrupt": True},
            {"t": 0.095, "interrupt": True},
            {"t": 0.120, "bs": 1, "w": 16, "ms": 10.0, "run": 4}]
    from domino_sglang.bench.adaptive_trace import interrupt_gaps, render, summarise
    g = interrupt_gaps(recs)
    assert g["lead_ms"] == pytest.approx([15.0])
    assert g["gap_ms"] == pytest.approx([25.0])
    s = summarise(recs)
    assert s["interrupt_gaps"]["n"] == 1
    assert "forward -> next round start 25.0 ms" in render(s)
    assert summarise(recs[:2])["interrupt_gaps"] is None
