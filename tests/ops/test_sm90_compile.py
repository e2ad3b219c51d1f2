"""The head's kernels as an H100 / H200 compiles them (sm_90, Triton's bundled ptxas; no GPU
needed): what a CPU run under the interpreter cannot see.

Session 15 (benchmarks/results/session15_20261207): with fp16 weights the GRU / W1 phase ran
fp32 "ieee" dots (dot mode 2), compiled with 32 registers and a 2.5 KB stack per thread, and a
Qwen3-8B-shape Domino round cost 59 ms instead of 11 at batch 4; and a tree of topk 4 at batch
64 (256 frontier rows) asked the correction kernel for 336 KB of shared memory (227 KB allowed)
and the server did not start (and the GRU step of a topk-8 tree at batch 64, 272 KB)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMEM_LIMIT = 232448  # bytes per program on sm_90
ROOT = Path(__file__).resolve().parents[2]


def _compile(*specs):
    try:
        import triton.backends.nvidia as nv
    except ImportError:
        pytest.skip("Triton's NVIDIA backend is not installed")
    bindir = Path(nv.__file__).parent / "bin"
    if not (bindir / "ptxas").exists() or not (bindir / "cuobjdump").exists():
        pytest.skip("Triton's bundled ptxas / cuobjdump are missing")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("sm90_resources.py")),
                           *specs], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_fp16_head_uses_tensor_cores_without_spilling():
    """Rows > 2 take the dot path of the pre phase: fp16 weights must compile like bf16 ones
    (hi / lo split on tensor cores, dot mode 4), not to fp32 FMA loops that spill."""
    res = {(r["dtype"], r["rows"]): r for r in _compile("pre:4", "pre:16")}
    for rows in (4, 16):
        fp16, bf16 = res[("fp16", rows)], res[("bf16", rows)]
        assert fp16["mode"] == 4 and bf16["mode"] == 1
        assert fp16["stack"] <= 2 * bf16["stack"] + 64, (fp16, bf16)
        assert fp16["shared"] <= SMEM_LIMIT, fp16


@pytest.mark.parametrize("rows", [64, 256, 512])
def test_correction_kernel_fits_shared_memory(rows):
    """Frontier rows of a topk 4 / 8 tree at batch 64 (and the chain's 64): every program of
    the correction kernel fits an sm_90 program's shared memory, for bf16 and fp16 weights."""
    for r in _compile(f"corr:{rows}"):
        assert r["shared"] <= SMEM_LIMIT, r


def test_gru_kernel_fits_shared_memory():
    """The tree's GRU step runs batch x topk rows: 512 at topk 8 and batch 64 asked for 272 KB
    (session 15, H100, the tiny pair's 8x32 tree server did not start)."""
    for r in _compile("gru:256", "gru:512"):
        assert r["shared"] <= SMEM_LIMIT, r
