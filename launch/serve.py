"""Start SGLang 0.5.17 with Domino speculative decoding and wait until it is healthy.

  python launch/serve.py --model Qwen/Qwen3-8B --draft Huang2020/Qwen3-8B-Domino-b16 \\
      --port 30000 [-- any other sglang.launch_server flags]
  python launch/serve.py --model TARGET --draft DRAFT --print-command   # show, do not start

Defaults: --speculative-algorithm domino, the drafter's block size as
--speculative-num-draft-tokens, triton attention, --cuda-graph-bs-decode 1 2 4 8 16 32.
--head-impl (a developer switch SGLang's command line cannot carry: it rejects unknown flags)
goes to the server through its environment as DOMINO_HEAD_IMPL.

EXPERIMENTAL tree mode (--tree-topk in [2, 8] with --tree-budget N in [block, 64];
docs/tree_mode.md) is passed as SGLang's own tree flags: --speculative-eagle-topk K (branching)
and --speculative-num-draft-tokens N (the node budget), the block to
--speculative-dflash-block-size; --grammar-backend none / --page-size 1 are added unless given
after --; the attention backend must be triton or flashinfer.
The plugin is found through the entry point of the installed domino-sglang package.

Exit codes: 0 when --detach and the server is healthy (or, in the foreground, when the server
exits cleanly), 1 on a failed start, 2 on a bad argument (one line naming it; nothing started).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _is_local(value: str) -> bool:
    """A path rather than a Hub id: it exists, or it is written like a path."""
    return Path(value).expanduser().exists() or value.startswith(("/", ".", "~"))


def draft_block_size(draft: str) -> int | None:
    cfg = Path(draft).expanduser() / "config.json"
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
        # tree mode: --speculative-num-draft-tokens is the node budget (below), B goes here
        cmd += ["--speculative-dflash-block-size" if tree else "--speculative-num-draft-tokens",
                str(block)]
    if tree:
        cmd += ["--speculative-eagle-topk", str(args.tree_topk),
                "--speculative-num-draft-tokens", str(args.tree_budget)]
        for flag, value in (("--grammar-backend", "none"), ("--page-size", "1")):
            if flag not in extra:
                cmd += [flag, value]
    if args.cuda_graph_bs_decode:
        # --cuda-graph-bs is a deprecated alias of this flag in SGLang 0.5.17
        cmd += ["--cuda-graph-bs-decode", *[str(b) for b in args.cuda_graph_bs_decode]]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    return cmd + extra


def validate(args) -> None:
    """Every argument, before anything starts (raises CliError)."""
    from domino_sglang.cli._common import CliError, check_model_dir, check_number

    for flag, value in (("--model", args.model), ("--draft", args.draft)):
        if _is_local(value):
            check_model_dir(flag, value, "target model" if flag == "--model" else "drafter")
    check_number("--port", args.port, ge=1, le=65535)
    check_number("--block-size", args.block_size, ge=2,
                 fix="leave it unset to use the drafter's block size")
    check_number("--mem-fraction", args.mem_fraction, gt=0, lt=1, fix="e.g. 0.85")
    check_number("--timeout", args.timeout, gt=0, fix="seconds, e.g. 900")
    for b in args.cuda_graph_bs_decode or []:
        check_number("--cuda-graph-bs-decode", b, ge=1, fix="batch sizes, e.g. 1 2 4 8")
    topk = args.tree_topk or 1
    check_number("--tree-topk", topk, ge=1, le=8, fix="1 = chain mode, 2-8 = tree mode")
    if topk > 1:
        if args.tree_budget is None:
            raise CliError("--tree-topk", topk, "experimental tree mode needs --tree-budget N",
                           "add --tree-budget N (block size <= N <= 64)")
        block = args.block_size or draft_block_size(args.draft) or 2
        check_number("--tree-budget", args.tree_budget, ge=block, le=64,
                     fix=f"the drafter's block size ({block}) <= N <= 64")
        if args.attention_backend not in ("triton", "flashinfer"):
            raise CliError("--attention-backend", args.attention_backend, "tree mode needs "
                           "the tree attention mask", "use triton or flashinfer")
    elif args.tree_budget is not None:
        raise CliError("--tree-budget", args.tree_budget, "only applies to tree mode",
                       "add --tree-topk 2..8 or drop --tree-budget")
    if args.log is not None:
        parent = Path(args.log).expanduser().parent
        if not parent.is_dir():
            raise CliError("--log", args.log, f"folder {parent} does not exist",
                           "create it first or pick another path")


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


def build_parser():
    from domino_sglang.cli._common import CliParser

    ap = CliParser(prog="launch/serve.py", description=__doc__,
                   aliases={"--cuda-graph-bs": "--cuda-graph-bs-decode"})
    ap.add_argument("--model", required=True, metavar="TARGET",
                    help="target model: a local folder or a Hugging Face Hub id (required)")
    ap.add_argument("--draft", required=True, metavar="DRAFT",
                    help="Domino drafter in the public format: a local folder or a Hub id "
                         "(required)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on "
                    "(default: 127.0.0.1)")
    ap.add_argument("--port", type=int, default=30000, help="port (default: 30000)")
    ap.add_argument("--block-size", type=int, default=None, metavar="N",
                    help="tokens per verify block (default: the drafter's block_size)")
    ap.add_argument("--attention-backend", default="triton", metavar="NAME",
                    help="target attention backend (default: triton)")
    ap.add_argument("--mem-fraction", type=float, default=0.85, metavar="F",
                    help="GPU memory fraction for weights and KV cache, SGLang's "
                         "--mem-fraction-static (default: 0.85)")
    ap.add_argument("--dtype", default=None,
                    choices=["auto", "half", "float16", "bfloat16", "float", "float32"],
                    help="model dtype (default: SGLang's auto)")
    ap.add_argument("--cuda-graph-bs-decode", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32],
                    metavar="BS", help="decode batch sizes captured as CUDA graphs; "
                    "--cuda-graph-bs is the old spelling (default: 1 2 4 8 16 32)")
    ap.add_argument("--tree-topk", type=int, default=None, metavar="K",
                    help="tree branching, passed as --speculative-eagle-topk: 1 = chain, "
                         "2-8 = EXPERIMENTAL tree mode (default: 1)")
    ap.add_argument("--tree-budget", type=int, default=None, metavar="N",
                    help="tree node budget, block size <= N <= 64, passed as "
                         "--speculative-num-draft-tokens; tree mode only (default: none)")
    ap.add_argument("--head-impl", choices=["auto", "torch", "triton", "ops"], default=None,
                    help="DOMINO_HEAD_IMPL (default: auto = the Triton head if it passes its "
                         "start-up self-check, else the PyTorch head)")
    ap.add_argument("--timeout", type=float, default=900, metavar="S",
                    help="seconds to wait for /health (default: 900)")
    ap.add_argument("--log", default=None, metavar="FILE",
                    help="server log file (default: the server writes to this terminal)")
    ap.add_argument("--detach", action="store_true",
                    help="return once healthy and leave the server running, printing its pid "
                         "(default: off)")
    ap.add_argument("--print-command", action="store_true",
                    help="print the environment and the sglang.launch_server command, then "
                         "exit without starting anything (default: off)")
    return ap


def main(argv=None) -> int:
    """Bad arguments: one line on stderr and SystemExit(2), as argparse does."""
    from domino_sglang.cli._common import CliError

    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        validate(args)
    except CliError as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        ap.exit(2, f"{ap.prog}: error: {exc}\n")

    cmd = build_command(args, extra)
    env = dict(os.environ)
    if args.head_impl is not None:
        env["DOMINO_HEAD_IMPL"] = args.head_impl
    if args.print_command:
        changed = env.get("DOMINO_HEAD_IMPL") != os.environ.get("DOMINO_HEAD_IMPL")
        domino_env = [f"DOMINO_HEAD_IMPL={env['DOMINO_HEAD_IMPL']}"] if changed else []
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
