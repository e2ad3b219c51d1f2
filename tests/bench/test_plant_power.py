"""benchmarks/plant_power_cpu.py: PIT-space bins of a verifier's output (uniform exactly when the
output is the target's p), and a short run on the committed pair: the control has no power, the
planted verifiers have their deviations, the result files carry provenance."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("plant_power_cpu",
                                              ROOT / "benchmarks" / "plant_power_cpu.py")
pp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pp)


def test_pit_bins_and_outputs():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.2, 0.5])
    outs = pp.outputs(p, q)
    assert torch.allclose(outs["correct"], p, atol=1e-6)  # the lossless verifier's output is p
    for o in outs.values():
        assert float(o.sum()) == pytest.approx(1.0, abs=1e-6)
    flat = pp.pit_bins(p, p, 20)
    assert torch.allclose(flat, torch.full((20,), 0.05, dtype=torch.float64), atol=1e-9)
    skew = pp.pit_bins(p, outs["residual_q"], 20)
    assert float(skew.sum()) == pytest.approx(1.0) and float(skew[-1]) > 0.05  # q's tail token
    assert pp.chi2_isf(1e-6, 19) == pytest.approx(63.7, abs=0.1)


def test_short_run_on_the_committed_pair(tmp_path):
    assert pp.main(["--num-prompts", "3", "--sims", "20", "--commit", "feedbee",
                    "--out-dir", str(tmp_path)]) == 0
    data = json.loads(next(tmp_path.glob("plant_power_*.json")).read_text())
    v = data["verifiers"]
    assert v["correct"]["max_bin_dev"] == 0 and v["correct"]["power"] == 0
    assert v["residual_q"]["noncentrality"] > v["residual_p"]["noncentrality"] > 0
    assert data["meta"]["git"]["commit"] == "feedbee" and data["prompts"] == 3
    assert "| residual_q |" in next(tmp_path.glob("plant_power_*.md")).read_text()
