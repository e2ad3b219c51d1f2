"""benchmarks/sampled_gpu.py: the reference distributions, the PIT analysis (it passes lossless
draws and catches the planted wrong residual's distortion), and the dry run."""

import importlib.util
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "sampled_gpu.py"
spec = importlib.util.spec_from_file_location("sampled_gpu", SCRIPT)
sg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sg)


def test_reference_probs():
    tops = [(5, math.log(0.5)), (7, math.log(0.3)), (1, math.log(0.1))]
    assert sg.reference_probs(tops, 1.0, -1) == pytest.approx({5: 0.5, 7: 0.3, 1: 0.1})
    two = sg.reference_probs(tops, 0.5, 2)  # top-2 at T=0.5: 0.25 : 0.09
    assert two == pytest.approx({5: 0.25 / 0.34, 7: 0.09 / 0.34})
    tie = [(5, -1.0), (7, -2.0), (1, -2.0)]
    assert sg.reference_probs(tie, 1.0, 2) is None  # boundary tie: membership ambiguous
    near = [(5, -1.0), (7, -2.0), (1, -2.05)]
    assert sg.reference_probs(near, 1.0, 2) is not None
    assert sg.reference_probs(near, 1.0, 2, margin=0.07) is None  # within the margin
    assert sg.reference_probs(tops[:2], 1.0, 2) is None  # too few entries to see the boundary
    with pytest.raises(ValueError):
        sg.reference_probs(tops, 0.7, -1)


def _world(seed=0, vocab=6):
    """A toy 'target': next-token distribution depends on the last token."""
    rng = random.Random(seed)
    table = {}
    for last in range(vocab):
        w = [rng.random() ** 2 + 0.01 for _ in range(vocab)]
        z = sum(w)
        table[last] = [x / z for x in w]
    return table


def _draws(table, n, length, wrong: bool, rng):
    """Sequences from the toy target; ``wrong`` mimics the planted bug: the greedy token of
    each step gets p + (1 - p) p when a coin says the draft was rejected."""
    seqs = []
    for i in range(n):
        toks = [i % len(table)]
        for _ in range(length):
            p = table[toks[-1]]
            if wrong:
                x = max(range(len(p)), key=p.__getitem__)
                q = [(1 - p[x]) * v for v in p]
                q[x] = p[x] + (1 - p[x]) * p[x]
                p = q
            toks.append(rng.choices(range(len(p)), weights=p)[0])
        seqs.append((0, toks))
    return seqs


def _tops(table, seqs):
    out = {}
    for pi, toks in seqs:
        for j in range(1, len(toks)):
            p = table[toks[j - 1]]
            out[(pi, tuple(toks[:j]))] = sorted(((t, math.log(v)) for t, v in enumerate(p)),
                                                key=lambda t: -t[1])
    return out


def test_pit_analysis_passes_lossless_and_catches_the_planted_residual():
    table = _world()
    rng = random.Random(1)
    good = _draws(table, 400, 6, False, rng)
    bad = _draws(table, 400, 6, True, rng)
    rg = sg.pit_analysis(good, _tops(table, good), 1.0, -1, 20, seed=0)
    rb = sg.pit_analysis(bad, _tops(table, bad), 1.0, -1, 20, seed=0)
    assert rg["pit_values"] == 400 * 6 and rg["missing_reference"] == 0
    assert rg["pooled"]["p_value"] > 1e-3
    assert rb["pooled"]["p_value"] < 1e-6
    # the mean PIT: within a few sd of 0.5 when lossless, pulled off by the planted residual
    assert abs(rg["mean_pit_z"]) < 4 and abs(rb["mean_pit_z"]) > 4
    assert rg["mean_pit"] == pytest.approx(0.5, abs=4 / math.sqrt(12 * rg["pit_values"]))
    # with top-k: a token outside the request's top-k is counted as a hard failure
    rk = sg.pit_analysis(good, _tops(table, good), 1.0, 2, 20, seed=0)
    assert rk["outside_top_k"] > 0


def test_verdict_needs_the_power_check():
    class A:
        alpha, power_alpha = 1e-3, 1e-6
    res = {"results": {"domino/t1": {"pooled": {"p_value": 0.4}},
                       "planted/t1": {"pooled": {"p_value": 1e-9}}}}
    assert sg.verdict(res, A)["ok"]
    res["results"]["planted/t1"]["pooled"]["p_value"] = 0.2  # the bug went unseen
    assert not sg.verdict(res, A)["ok"]
    del res["results"]["planted/t1"]  # no power check at all
    assert not sg.verdict(res, A)["ok"]
    # a configuration skipped whole is listed, not counted; one cut inside still fails
    res["results"]["planted/t1"] = {"pooled": {"p_value": 1e-9}}
    res["skipped_configs"] = {"t07k8": "time budget: 30 s left, ~120 s needed"}
    v = sg.verdict(res, A)
    assert v["ok"] and v["skipped_configs"] == res["skipped_configs"]
    res["results"]["planted/t07k8"] = {"error": "skipped: time budget"}
    assert not sg.verdict(res, A)["ok"]


def test_dry_run_prints_the_servers(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if ": " in ln]
    names = [ln.split(":")[0] for ln in lines]
    assert names == ["plain", "domino", "planted", "domino_tree", "planted_tree"]
    planted = next(ln for ln in lines if ln.startswith("planted"))
    assert "DOMINO_SAMPLED_VERIFY=planted-wrong-residual" in planted
    assert "--speculative-eagle-topk 4" in next(ln for ln in lines if ln.startswith("domino_tree"))
    tree_planted = next(ln for ln in lines if ln.startswith("planted_tree"))
    assert "--speculative-eagle-topk 4" in tree_planted
    assert "DOMINO_SAMPLED_VERIFY=planted-wrong-residual" in tree_planted
    assert list(tmp_path.glob("sampled_gpu_*.json"))


def test_bad_system_is_refused(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--systems", "domino,nope",
                          "--out-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode != 0 and "--systems" in (out.stderr + out.stdout)


def test_log_marks_keep_what_the_server_says_it_runs(tmp_path):
    log = tmp_path / "s.log"
    log.write_text("noise\n[t] domino serve config: chain, head=auto\n[t] Domino sampled drafts "
                   "ON: sampled requests draft from q\nmore noise\n[t] domino: DOMINO_SAMPLED_"
                   "VERIFY=planted-wrong-residual: ... DELIBERATELY WRONG verifier\n")
    marks = sg.log_marks(log)
    assert len(marks) == 3 and "sampled drafts ON" in marks[1] and "DELIBERATELY" in marks[2]
    assert sg.log_marks(tmp_path / "missing.log") == []
