"""Compile the head's kernels for sm_90 on this machine (no GPU: Triton's bundled ptxas) and
print their resource use as JSON lines; run by tests/ops/test_sm90_compile.py in a subprocess
(TRITON_INTERPRET must be off when the kernels are defined)."""

import json
import os
import subprocess
import sys
import tempfile

import torch
import triton
import triton.backends.nvidia as nv
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from domino_sglang.kernels import _launch, domino_head as dh, domino_head_fast as hf

CUOBJDUMP = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
TARGET = GPUTarget("cuda", 90, 32)
V, R, G = 151936, 256, 1024  # Qwen3-8B vocabulary, the public drafter's rank and GRU size
DT = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def resources(kernel) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    out = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    fields = dict(tok.split(":", 1) for line in out.splitlines() if "REG:" in line
                  for tok in line.split() if ":" in tok)
    return {"regs": int(fields["REG"]), "stack": int(fields["STACK"]),
            "shared": int(kernel.metadata.shared)}


def pre_kernel(wdt, rows):
    cfg = hf.pre_settings(rows, R, G)
    pb = _launch.batch_block(rows)
    sig = {"step": "i32", "B": "i32", "tok_in_ptr": "*i64", "s_tok_in": "i32", "from_parts": "i32",
           "pval_ptr": "*fp32", "pidx_ptr": "*i32", "tok_out_ptr": "*i64", "s_tok_out": "i32",
           "gi_ptr": "*fp32", "gh_in_ptr": "*fp32", "s_in_ptr": "*fp32", "has_state": "i32",
           "s_out_ptr": "*fp32", "w1s_ptr": "*" + DT[wdt], "whh_ptr": "*" + DT[wdt],
           "ah_ptr": "*fp32", "s_ah_b": "i32", "act_ptr": "*fp32", "gh_out_ptr": "*fp32"}
    cons = {"num_parts": 264, "R": R, "G": G, "FUSE": True, "USE_DOT": cfg["USE_DOT"],
            "MODE": _launch.dot_mode(torch.float32, wdt), "PB": pb, "BLOCK_B": cfg["BLOCK_B"],
            "BLOCK_N": cfg["BLOCK_N"], "BLOCK_K": cfg["BLOCK_K"],
            "CHUNK": max(16, min(512, 4096 // pb))}
    return triton.compile(ASTSource(hf._pre_kernel, sig, cons), target=TARGET,
                          options={"num_warps": cfg["num_warps"]})


def corr_kernel(wdt, rows):
    cfg = _launch.corr_settings(V, R, rows, torch.device("cuda", 0))
    sig = {"base_ptr": "*fp32", "s_base": "i32", "act_ptr": "*fp32", "w2_ptr": "*" + DT[wdt],
           "lg_ptr": "*fp32", "s_lg": "i32", "pval_ptr": "*fp32", "pidx_ptr": "*i32", "B": "i32",
           "R": "i32", "rows_per_req": "i32"}
    cons = {"V": V, "ITERS": 8, "USE_CORR": True, "MODE": _launch.dot_mode(torch.float32, wdt),
            "WRITE_LOGITS": True, "NUM_CTAS": cfg["num_ctas"], "BLOCK_V": cfg["BLOCK_V"],
            "BLOCK_B": cfg["BLOCK_B"], "BLOCK_R": cfg["BLOCK_R"], "PB": _launch.batch_block(rows)}
    return triton.compile(ASTSource(dh._corr_kernel, sig, cons), target=TARGET,
                          options={"num_warps": cfg["num_warps"]})


def gru_kernel(wdt, rows):
    cfg = _launch.gru_settings(G, rows, torch.device("cuda", 0))
    sig = {"tok_ptr": "*i64", "s_tok": "i32", "pval_ptr": "*fp32", "pidx_ptr": "*i32",
           "tok_out_ptr": "*i64", "s_tok_out": "i32", "gi_ptr": "*fp32", "w_ih_ptr": "*" + DT[wdt],
           "w_hh_ptr": "*" + DT[wdt], "s_in_ptr": "*fp32", "src_ptr": "*i64", "s_out_ptr": "*fp32",
           "B": "i32"}
    cons = {"num_parts": 264, "G": G, "D": R, "FROM_PARTIALS": False, "HAS_TABLE": True,
            "HAS_STATE": True, "HAS_SRC": True, "MODE_IH": _launch.dot_mode(wdt, wdt),
            "MODE_HH": _launch.dot_mode(torch.float32, wdt), "BLOCK_B": cfg["BLOCK_B"],
            "BLOCK_G": cfg["BLOCK_G"], "BLOCK_K": cfg["BLOCK_K"], "CHUNK": 64,
            "PB": _launch.batch_block(rows)}
    return triton.compile(ASTSource(dh._gru_kernel, sig, cons), target=TARGET,
                          options={"num_warps": cfg["num_warps"]})


def main():
    # the GPU's launch policy, not the interpreter's (this process compiles, it runs nothing)
    _launch.interpreting = lambda: False
    _launch.num_sms = lambda index: 132
    for name, rows in (a.split(":") for a in sys.argv[1:]):
        for wdt in DT:
            k = {"pre": pre_kernel, "corr": corr_kernel, "gru": gru_kernel}[name](wdt, int(rows))
            print(json.dumps({"kernel": name, "rows": int(rows), "dtype": DT[wdt],
                              "mode": _launch.dot_mode(torch.float32, wdt), **resources(k)}),
                  flush=True)


if __name__ == "__main__":
    main()
