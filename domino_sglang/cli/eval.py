"""domino-eval: tau (tokens committed per verification round) of one or more drafters on
held-out prompts, at each temperature, with the Transformers backend.

Example (the project's trained pair):

  domino-eval --target assets/domino-tiny/target \\
      --drafter domino=assets/domino-tiny/drafter-domino \\
      --drafter dflash=assets/domino-tiny/drafter-dflash \\
      --prompts assets/domino-tiny/heldout_prompts.jsonl --num-prompts 20 \\
      --temperatures 0,1 --out tau_tiny.json
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from pathlib import Path

from ._common import (CliError, CliParser, check_device, check_input_file, check_model_dir,
                      check_number, check_output_dir, run_cli)

PROG = "domino-eval"


def build_parser() -> CliParser:
    p = CliParser(prog=PROG, description=__doc__)
    p.add_argument("--target", required=True, metavar="DIR",
                   help="local folder of the Hugging Face target model, with its tokenizer "
                        "(required)")
    p.add_argument("--drafter", action="append", required=True, metavar="NAME=DIR",
                   help="a drafter in the public format and the name it gets in the results; "
                        "repeat for several (required)")
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="JSONL file with an 'input_ids' list per line (required)")
    p.add_argument("--num-prompts", type=int, default=200, metavar="N",
                   help="prompts evaluated, the first N of the file (default: 200)")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                   help="new tokens per prompt (default: 128)")
    p.add_argument("--temperatures", default="0,1", metavar="T,T,...",
                   help="comma-separated sampling temperatures; 0 = greedy (default: 0,1)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="sampling seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of target and drafters (default: float32)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads, 0 = torch's default (default: 0)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the results to this JSON file (default: print only)")
    p.add_argument("--point-mass-drafts", action="store_true",
                   help="at temperature > 0, draft the head's argmax and verify it as a point "
                        "mass (what the SGLang server does today) instead of sampling drafts "
                        "from the head's distribution; a diagnostic of the server's T > 0 tau "
                        "(default: off)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (default: off; also off when stderr is not a terminal)")
    return p


def validate(args) -> tuple[list[float], dict[str, Path]]:
    """Every input, before any model loads: the temperatures and the drafter folders."""
    check_number("--num-prompts", args.num_prompts, ge=1, fix="e.g. 200")
    check_number("--max-new-tokens", args.max_new_tokens, ge=1, fix="e.g. 128")
    check_number("--threads", args.threads, ge=0, fix="use 0 for torch's default")
    temps = []
    for text in args.temperatures.split(","):
        if not text.strip():
            continue
        try:
            t = float(text)
        except ValueError:
            raise CliError("--temperatures", args.temperatures, f"{text.strip()!r} is not a "
                           "number", "give numbers separated by commas, e.g. 0,1") from None
        check_number("--temperatures", t, ge=0, fix="0 = greedy, > 0 samples")
        temps.append(t)
    if not temps:
        raise CliError("--temperatures", args.temperatures, "no temperature given", "e.g. 0,1")
    check_device("--device", args.device)
    target = check_model_dir("--target", args.target, "target model")
    if not ((target / "tokenizer.json").is_file() or (target / "tokenizer_config.json").is_file()):
        raise CliError("--target", args.target, "no tokenizer in this folder",
                       "give a model folder saved with its tokenizer")
    target_cfg = json.loads((target / "config.json").read_text())
    target_cfg = {k: v for k, v in target_cfg.items() if k not in ("dtype", "torch_dtype")}
    drafters: dict[str, Path] = {}
    from ..config import ConfigError, DrafterConfig

    for item in args.drafter:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise CliError("--drafter", item, "expected NAME=DIR", "e.g. domino=runs/domino/drafter")
        if name in drafters:
            raise CliError("--drafter", item, f"the name {name!r} is used twice",
                           "give each drafter its own name")
        path = check_model_dir("--drafter", folder, "drafter")
        try:
            DrafterConfig.from_file(path).check_against_target(target_cfg)
        except ConfigError as exc:
            raise CliError("--drafter", item, f"does not fit --target {args.target}: {exc}",
                           "give a drafter trained for this target") from None
        drafters[name] = path
    prompts = check_input_file("--prompts", args.prompts)
    with prompts.open() as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ids = json.loads(line)["input_ids"]
                ok = isinstance(ids, list) and len(ids) > 0 and all(isinstance(t, int) for t in ids)
            except (json.JSONDecodeError, KeyError, TypeError):
                ok = False
            if not ok:
                raise CliError("--prompts", args.prompts, f"line {i} has no non-empty "
                               "'input_ids' list of token ids", 'each line must be like '
                               '{"input_ids": [1, 2, 3]}')
            if i >= args.num_prompts:
                break
    if args.out is not None:
        check_output_dir("--out", Path(args.out).parent)
        if Path(args.out).is_dir():
            raise CliError("--out", args.out, "is a folder", "give a file name, e.g. DIR/tau.json")
    return temps, drafters


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, argv, _main)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    temps, drafter_dirs = validate(args)
    from ..bench.harness import provenance

    # at the start: the tree that runs (commit, dirty), date, the command (runnable form)
    prov = provenance(["-m", "domino_sglang.cli.eval", *argv])
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
                       seed=args.seed, quiet=quiet,
                       draft_sampling=not args.point_mass_drafts)
    out = {"results": res, "args": vars(args),
           "drafters": {n: str(p) for n, p in drafter_dirs.items()},
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version()},
           "device": str(device), "git_rev": prov["git"].get("commit"), "provenance": prov}
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    for name, r in res.items():
        print(name, "  ".join(f"{t}: tau={v['tau']:.3f}" for t, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
