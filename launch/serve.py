"""Start SGLang 0.5.17 with Domino speculative decoding and wait until it is healthy.

    python launch/serve.py --model Qwen/Qwen3-8B --draft Huang2020/Qwen3-8B-Domino-b16 \
        --port 30000 [-- any extra sglang.launch_server flags]

Defaults: ``--speculative-algorithm domino``, the block size from the drafter config
(``--speculative-num-draft-tokens``), triton attention, ``--cuda-graph-bs 1 2 4 8 16 32``.
Domino options that SGLang's CLI cannot carry go through the environment of the server:
``--tree-topk/--tree-budget`` set ``DOMINO_TREE_TOPK/DOMINO_TREE_BUDGET``, ``--head-impl`` sets
``DOMINO_HEAD_IMPL``.

EXPERIMENTAL tree mode (``--tree-topk`` in [2, 8] with ``--tree-budget`` N in [block, 64];
greedy-lossless on the H200, docs/tree_mode.md): the block goes to ``--speculative-dflash-block-size``
(the server sets ``--speculative-num-draft-tokens`` to the node count itself), and
``--grammar-backend none`` / ``--page-size 1`` are added unless given after ``--``; the attention
backend must be triton or flashinfer.
The plugin is found through the entry point of the installed ``domino-sglang`` package.

Exit codes: 0 when ``--detach`` and the server is healthy (or, in the foreground, when the
server exits cleanly), 1 on a failed start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def draft_block_size(draft: str) -> int | None:
    cfg = Path(draft) / "config.json"
    if not cfg.is_file():
        return None  # a Hub id: SGLang reads the block size itself
    data = json.loads(cfg.read_text())
    return (data.get("dflash_config") or {}).get("block_size") or data.get("block_size")


def build_command(args, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", args.model,
           "--speculative-algorithm", "domino", "--speculative-draft-model-path", args.draft,
           "--host", args.host, "--port", str(args.port),
           "--attention-backend", args.attention_backend,
           "--mem-fraction-static", str(args.mem_fraction)]
    block = args.block_size or draft_block_size(args.draft)
    tree = (args.tree_topk or 1) > 1
    if block:
        # tree mode: --speculative-num-draft-tokens is the node count N (set by the plugin)
        cmd += ["--speculative-dflash-block-size" if tree else "--speculative-num-draft-tokens",
                str(block)]
    if tree:
        for flag, value in (("--grammar-backend", "none"), ("--page-size", "1")):
            if flag not in extra:
                cmd += [flag, value]
    if args.cuda_graph_bs:
        cmd += ["--cuda-graph-bs", *[str(b) for b in args.cuda_graph_bs]]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    return cmd + extra


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(2)
    return False


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description="Serve a target with a Domino drafter on SGLang.")
    ap.add_argument("--model", required=True, help="target model (folder or Hub id)")
    ap.add_argument("--draft", required=True, help="Domino drafter (public format)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=30000)
    ap.add_argument("--block-size", type=int, default=None,
                    help="tokens per verify block (default: the drafter's block_size)")
    ap.add_argument("--attention-backend", default="triton",
                    help="target attention backend (default: triton)")
    ap.add_argument("--mem-fraction", type=float, default=0.85,
                    help="--mem-fraction-static (default 0.85)")
    ap.add_argument("--dtype", default=None, help="--dtype (default: SGLang's auto)")
    ap.add_argument("--cuda-graph-bs", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32],
                    help="decode CUDA-graph batch sizes (default 1 2 4 8 16 32)")
    ap.add_argument("--tree-topk", type=int, default=None,
                    help="DOMINO_TREE_TOPK: 1 = chain (default); 2-8 = EXPERIMENTAL tree mode")
    ap.add_argument("--tree-budget", type=int, default=None,
                    help="DOMINO_TREE_BUDGET: tree node budget N, block size <= N <= 64")
    ap.add_argument("--head-impl", choices=["auto", "torch", "triton", "ops"], default=None,
                    help="DOMINO_HEAD_IMPL (default auto: Triton ops if they pass a self-check)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for /health")
    ap.add_argument("--log", default=None, help="server log file (default: inherit stdout)")
    ap.add_argument("--detach", action="store_true",
                    help="return once healthy and leave the server running (prints its pid)")
    ap.add_argument("--print-command", action="store_true", help="print the command and exit")
    args = ap.parse_args(argv)
    if (args.tree_topk or 1) > 1:
        if args.tree_budget is None:
            ap.error("--tree-topk > 1 (experimental tree mode) needs --tree-budget N "
                     "(block size <= N <= 64)")
        if args.attention_backend not in ("triton", "flashinfer"):
            ap.error(f"--attention-backend {args.attention_backend}: tree mode needs triton or "
                     "flashinfer (the tree attention mask)")

    cmd = build_command(args, extra)
    env = dict(os.environ)
    for key, val in (("DOMINO_TREE_TOPK", args.tree_topk), ("DOMINO_TREE_BUDGET", args.tree_budget),
                     ("DOMINO_HEAD_IMPL", args.head_impl)):
        if val is not None:
            env[key] = str(val)
    if args.print_command:
        domino_env = [f"{k}={env[k]}" for k in ("DOMINO_TREE_TOPK", "DOMINO_TREE_BUDGET",
                                                "DOMINO_HEAD_IMPL")
                      if k in env and env[k] != os.environ.get(k)]
        print(" ".join(domino_env + cmd))
        return 0
    out = open(args.log, "w") if args.log else None
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                            start_new_session=args.detach)
    url = f"http://{args.host}:{args.port}"
    t0 = time.time()
    if not wait_healthy(url, proc, args.timeout):
        print(f"server did not become healthy (exit code {proc.poll()}); see "
              f"{args.log or 'the output above'}", file=sys.stderr)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return 1
    print(f"Domino server healthy at {url} after {time.time() - t0:.0f}s (pid {proc.pid})",
          flush=True)
    if args.detach:
        return 0
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
