"""``domino-eval``: acceptance length tau of one or more drafters on held-out prompts, at each
temperature, through the Transformers backend (``domino_sglang.hf.generate``).

Example::

    domino-eval --target assets/domino-tiny/target \\
        --drafter domino=assets/domino-tiny/drafter-domino \\
        --drafter dflash=assets/domino-tiny/drafter-dflash \\
        --prompts assets/domino-tiny/heldout_prompts.jsonl --num-prompts 200 \\
        --temperatures 0,1 --out benchmarks/results/tau_tiny.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="domino-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="HF model dir of the target (required)")
    p.add_argument("--drafter", action="append", required=True, metavar="NAME=DIR",
                   help="a drafter in the public format; repeat for several (required)")
    p.add_argument("--prompts", required=True,
                   help="JSONL with an 'input_ids' list per line (required)")
    p.add_argument("--num-prompts", type=int, default=200,
                   help="prompts evaluated, the first N of the file (default: 200)")
    p.add_argument("--max-new-tokens", type=int, default=128,
                   help="new tokens per prompt (default: 128)")
    p.add_argument("--temperatures", default="0,1",
                   help="comma-separated sampling temperatures; 0 = greedy (default: 0,1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of target and drafters (default: float32)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads, 0 = torch's default (default: 0)")
    p.add_argument("--out", default=None, help="JSON results file (default: stdout only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
    return p


def _git_rev() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.drafter import DominoDrafter
    from ..train.evaluate import evaluate_tau, load_prompts
    from ..train.trainer import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    try:
        temps = [float(x) for x in args.temperatures.split(",") if x.strip()]
        drafter_dirs = dict(d.split("=", 1) for d in args.drafter)
    except ValueError as exc:
        print(f"domino-eval: bad --temperatures or --drafter NAME=DIR ({exc})", file=sys.stderr)
        return 2
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(args.target)
    drafters = {n: DominoDrafter.from_pretrained(p, dtype=dtype, device=device).eval()
                for n, p in drafter_dirs.items()}
    prompts = load_prompts(args.prompts, args.num_prompts)
    if len(prompts) < args.num_prompts:
        logging.warning("only %d prompts in %s", len(prompts), args.prompts)
    quiet = args.quiet or not sys.stderr.isatty()
    res = evaluate_tau(target, drafters, prompts, temperatures=temps,
                       max_new_tokens=args.max_new_tokens, stop_token_ids=[tok.eos_token_id],
                       seed=args.seed, quiet=quiet)
    out = {"results": res, "args": vars(args), "drafters": drafter_dirs,
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version()},
           "device": str(device), "git_rev": _git_rev()}
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    for name, r in res.items():
        print(name, "  ".join(f"{t}: tau={v['tau']:.3f}" for t, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
