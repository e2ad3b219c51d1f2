"""benchmarks/bench_kernels.py without a GPU: it still writes its result files through the
harness (JSON + Markdown, provenance with the commit) and says why nothing was measured."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
bk = importlib.import_module("bench_kernels")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_no_gpu_writes_results_with_provenance(tmp_path, capsys):
    assert bk.main(["--out", str(tmp_path), "--commit", "5eed5eed"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    res = json.loads((tmp_path / "kernels_bench.json").read_text())
    assert res["meta"]["git"]["commit"] == "5eed5eed" == res["git_rev"]
    assert "--commit 5eed5eed" in res["meta"]["command"] == res["command"]
    assert "no CUDA device" in res["errors"]["run"]
    assert res["head"] == [] and res["tree"] == [] and res["config"]["batch_sizes"] == "1,16,64"
    md = (tmp_path / "kernels_bench.md").read_text()
    assert "- commit: 5eed5eed" in md and "no CUDA device" in md and "## Tree kernels" in md


def test_markdown_of_measured_rows():
    """The report of a finished run: the rows' tables under the provenance."""
    t = {"median_ms": 1.0, "p20_ms": 0.9, "p80_ms": 1.1}
    head = {"batch": 1, "fused_graph": {**t, "config": {}}, "fused_eager": t, "floor_ms": 0.5,
            "w2_only_floor_ms": 0.4, "ref_eager": t, "ref_graph": t, "ref_base_gemm_alone": t,
            "token_mismatches_vs_ref": 0, "tokens_checked": 15,
            "variants": {"default": {**t, "token_mismatches_vs_ref": 0}}}
    res = {"meta": {"command": "c", "git": {"commit": "abc", "dirty": False}}, "device": "GPU",
           "date": "d", "torch": "2", "triton": "3", "copy_bandwidth_GBps": 3000.0,
           "head": [head, {"batch": 16, "error": "OOM"}], "tree": [], "errors": {}}
    md = bk._markdown(res)
    assert "- commit: abc dirty=False" in md and "copy bandwidth 3000 GB/s" in md
    assert "| 1 | 1.000 (0.900/1.100) |" in md and "| 16 | error: OOM |" in md


def test_markdown_of_gi_table_rows():
    """--gi-tables rows: memory, both launch sequences with their mismatches, errors kept."""
    t = {"median_ms": 1.0, "p20_ms": 0.9, "p80_ms": 1.1, "token_mismatches_vs_ref": 2,
         "tokens_checked": 240}
    res = {"meta": {}, "device": "GPU", "date": "d", "torch": "2", "triton": "3",
           "copy_bandwidth_GBps": None, "head": [], "tree": [], "errors": {},
           "gi_tables": [{"batch": 16, "mode": "bf16", "table_mib": 890.4, "default": t,
                          "wide": t},
                         {"batch": 16, "mode": "none", "table_mib": 0.0, "default": t},
                         {"batch": 64, "mode": "none", "error": "OOM"}]}
    md = bk._markdown(res)
    assert "## GRU input table modes" in md
    assert "| 16 | bf16 | 890 | 1.000 (0.900/1.100), 2/240 mism. | 1.000 (0.900/1.100), " in md
    assert "| 16 | none | 0 | 1.000 (0.900/1.100), 2/240 mism. | - |" in md
    assert "| 64 | none | error: OOM |" in md
    assert "GRU input table" not in bk._markdown({**res, "gi_tables": []})


def test_markdown_of_serving_rows():
    """--serving-batch-sizes rows: the served GEMM beside a bf16-output one, propose bound for
    the batch and for 256, memory, mismatches; errors kept."""
    t = {"median_ms": 1.0, "p20_ms": 0.9, "p80_ms": 1.1}
    p = {**t, "max_batch": 16, "MiB": 900.0, "token_mismatches_vs_ref": 0, "tokens_checked": 240}
    q = {**p, "max_batch": 256, "MiB": 2400.0}
    res = {"meta": {}, "device": "GPU", "date": "d", "torch": "2", "triton": "3",
           "copy_bandwidth_GBps": None, "head": [], "tree": [], "errors": {},
           "serving": [{"batch": 16, "gemm_rows": 256, "gemm_fp32_out": t, "gemm_bf16_out": t,
                        "propose": p, "propose_bound_256": q},
                       {"batch": 64, "error": "OOM"}]}
    md = bk._markdown(res)
    assert "## The head as served" in md
    assert ("| 16 | 256 | 1.000 (0.900/1.100) | 1.000 (0.900/1.100) | 1.000 (0.900/1.100) | "
            "1.000 (0.900/1.100) | 900 / 2400 | 0/240, 0/240 |") in md
    assert "| 64 | error: OOM |" in md
    assert "as served" not in bk._markdown({**res, "serving": []})

