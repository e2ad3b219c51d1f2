"""python -m domino_sglang generate (also installed as: domino generate)

Runs Domino speculative decoding next to plain decoding with the Transformers backend and
prints the text, tau (tokens committed per verification round), tokens/s (median of
--repeats runs) and the speedup, and says whether Domino's greedy output is identical to
plain decoding.

    python -m domino_sglang generate                  # the project's trained tiny pair
    python -m domino_sglang generate --target DIR --draft DIR --prompt "..." --max-new-tokens 64
    python -m domino_sglang generate --temperature 0.7 --top-p 0.9     # sampling
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ._common import (CliError, CliParser, check_device, check_model_dir, check_number,
                      check_output_file, resolve_device_name, run_cli)

logger = logging.getLogger("domino_sglang.generate")

PROG = "domino generate"
DEFAULT_PROMPTS = ["Explain why the sky is blue in two sentences.",
                   "Write a Python function that checks whether a number is prime."]
DTYPES = ("auto", "float32", "bfloat16", "float16")
# the project's trained pair, as laid out in the repository clone
DEFAULT_PAIR = ("assets/domino-tiny/target", "assets/domino-tiny/drafter-domino")
PAIRS = ("cpu-demo", "tiny")
# bf16 logits of a 1-token and a many-token forward may differ by rounding: a greedy flip where
# the two tokens' logits are within this many bf16/fp16 steps is reported as a near-tie
TIE_ULPS = 2


def cache_dir() -> Path:
    """Where built demo pairs are kept: $DOMINO_CACHE_DIR, else ~/.cache/domino-sglang."""
    root = os.environ.get("DOMINO_CACHE_DIR") or Path.home() / ".cache" / "domino-sglang"
    return Path(root)


def demo_pair(tiny_target: Path, tiny_draft: Path, quiet: bool) -> tuple[Path, Path]:
    """The shipped tiny pair inflated to the ``cpu-demo`` shape (bench.inflate: the same
    function at the cost of a 0.4B-parameter model), built once (~10 s) into the cache."""
    from ..bench.inflate import inflate_pair

    src = tiny_target.parent
    out = cache_dir() / "pair-cpu-demo-bf16"
    stamp = out / "inflate.json"
    # every source the build reads (the head-off drafter too): a changed one rebuilds
    sources = [tiny_target / "model.safetensors", tiny_draft / "model.safetensors",
               src / "drafter-dflash" / "model.safetensors"]
    want = {"src_mtime": max(p.stat().st_mtime for p in sources if p.exists()),
            "src_bytes": [p.stat().st_size if p.exists() else None for p in sources]}
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("domino_generate") == want:
                return out / "target", out / tiny_draft.name
        except (OSError, ValueError):
            pass
    if not quiet:
        print(f"building the CPU demo pair (the trained pair of {src} inflated to a 0.4B-"
              f"parameter shape, once) into {out} ...", file=sys.stderr)
    inflate_pair(src, out, "cpu-demo", dtype="bfloat16", device="cpu",
                 drafters=(tiny_draft.name, "drafter-dflash"))
    meta = json.loads(stamp.read_text())
    meta["domino_generate"] = want
    stamp.write_text(json.dumps(meta, indent=2))
    return out / "target", out / tiny_draft.name


def default_pair_roots() -> list[Path]:
    """Where the default pair is looked for: the clone this package was installed from
    (editable install), then the current folder (any install, run from the clone)."""
    roots = [Path(__file__).resolve().parents[2], Path.cwd()]
    return list(dict.fromkeys(r.resolve() for r in roots))


def find_default_pair() -> tuple[Path, Path] | None:
    for root in default_pair_roots():
        target, draft = root / DEFAULT_PAIR[0], root / DEFAULT_PAIR[1]
        if (target / "config.json").is_file() and (draft / "config.json").is_file():
            return target, draft
    return None


def build_parser() -> CliParser:
    p = CliParser(prog="domino", description="Domino speculative decoding demos "
                  "(Transformers backend).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CliParser)
    g = sub.add_parser("generate", prog=PROG, description=__doc__,
                       help="Domino vs plain decoding on a few prompts")
    g.add_argument("--target", type=Path, default=None, metavar="DIR",
                   help="local folder of a Hugging Face target model (default: the project's "
                        f"trained pair, {DEFAULT_PAIR[0]} of the clone)")
    g.add_argument("--draft", type=Path, default=None, metavar="DIR",
                   help="local folder of a drafter in the public Domino format, trained for "
                        f"--target (default: {DEFAULT_PAIR[1]})")
    g.add_argument("--pair", choices=PAIRS, default=None,
                   help="without --target: 'cpu-demo' = the trained pair inflated to a "
                        "0.4B-parameter shape (built once into ~/.cache/domino-sglang, bf16): "
                        "the cost structure of a real LLM on a CPU; 'tiny' = the 3.8M-parameter "
                        "pair itself, too small for speculation to pay (default: cpu-demo)")
    g.add_argument("--random-pair", action="store_true",
                   help="use a tiny random model and drafter instead (no real text; token ids "
                        "are printed) (default: off)")
    g.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="prompt text, repeat for several (default: two built-in prompts)")
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                   help="wrap the prompt in the tokenizer's chat template when it has one "
                        "(default: on; --no-chat sends the raw text)")
    g.add_argument("--max-new-tokens", type=int, default=96, metavar="N",
                   help="tokens to generate per prompt (default: 96)")
    g.add_argument("--verify-width", type=int, default=None, metavar="N",
                   help="drafted tokens the target verifies per round (default: the whole "
                        "block, K-1)")
    g.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 = greedy; > 0 samples (default: 0)")
    g.add_argument("--top-k", type=int, default=0, metavar="K", help="sample among the k most likely "
                   "tokens, 0 = off (default: 0)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="P", help="sample from the smallest set of "
                   "tokens with this probability mass, 1 = off (default: 1)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the sampling (default: 0)")
    g.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="timed runs per method; tokens/s is the median (default: 3)")
    g.add_argument("--device", default="auto", metavar="DEVICE",
                   help="auto, cpu, cuda or cuda:N (default: auto = cuda if present)")
    g.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="dtype of both models (default: auto = bfloat16 for the cpu-demo "
                        "pair, float32 otherwise)")
    g.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads, 0 = torch's default (default: 0)")
    g.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the results to this JSON file (default: none)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bar and no log lines (default: off; the bar is also off "
                        "when stderr is not a terminal)")
    return p


# ---- validation (no model is loaded before it passes) -------------------------------------------
def validate(args) -> tuple[Path | None, Path | None]:
    """Check every input; return the (target, draft) folders, or (None, None) for the random
    pair. Raises :class:`CliError`."""
    check_number("--max-new-tokens", args.max_new_tokens, ge=1, fix="e.g. 128")
    check_number("--temperature", args.temperature, ge=0,
                 fix="use 0 for greedy decoding or a positive value to sample")
    check_number("--top-k", args.top_k, ge=0, fix="use 0 to turn top-k off")
    check_number("--top-p", args.top_p, gt=0, le=1, fix="use 1 to turn top-p off")
    check_number("--repeats", args.repeats, ge=1, fix="e.g. 3")
    check_number("--threads", args.threads, ge=0, fix="use 0 for torch's default")
    if args.verify_width is not None:
        check_number("--verify-width", args.verify_width, ge=1, fix="e.g. 4")
    for prompt in args.prompt or []:
        if not prompt.strip():
            raise CliError("--prompt", prompt, "empty prompt", "give some text")
    check_device("--device", args.device)
    if args.json is not None:
        check_output_file("--json", args.json)
    if args.pair is not None and (args.target is not None or args.random_pair):
        flag = "--target" if args.target is not None else "--random-pair"
        raise CliError("--pair", args.pair, f"cannot be combined with {flag}",
                       "--pair picks one of the shipped pairs; drop one of the two")
    if args.random_pair:
        for flag, value in (("--target", args.target), ("--draft", args.draft)):
            if value is not None:
                raise CliError(flag, value, "cannot be combined with --random-pair",
                               "drop one of the two")
        return None, None
    if args.target is not None:
        check_model_dir("--target", args.target, "target model")
    if args.draft is not None:
        check_model_dir("--draft", args.draft, "drafter")
    if args.draft is not None and args.target is None:
        raise CliError("--draft", args.draft, "given without --target",
                       "a drafter runs only with the target it was trained for: add --target DIR")
    if args.target is not None and args.draft is None:
        raise CliError("--target", args.target, "given without --draft",
                       "add --draft DIR (a drafter trained for this target)")
    if args.target is None:
        pair = find_default_pair()
        if pair is None:
            looked = ", ".join(str(r / DEFAULT_PAIR[0]) for r in default_pair_roots())
            raise CliError("--target", None, f"not given, and the default pair was not found "
                           f"(looked for {looked})", "run from the repository clone, pass "
                           "--target DIR --draft DIR, or --random-pair for a tiny random model")
        args.target, args.draft = pair
        args.pair = args.pair or "cpu-demo"
    check_pair(args.target, args.draft)
    return args.target, args.draft


def check_pair(target_dir: Path, draft_dir: Path) -> None:
    """The drafter's config fits the target's (from the two config.json files)."""
    from ..config import ConfigError, DrafterConfig

    try:
        target_cfg = json.loads((target_dir / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise CliError("--target", target_dir, f"config.json is not valid JSON ({exc})",
                       "fix or replace the file") from None
    if not any(target_dir.glob("*.safetensors")) and not any(target_dir.glob("*.bin")):
        raise CliError("--target", target_dir, "no weights (*.safetensors or *.bin) in this "
                       "folder", "give the folder of a saved model")
    if not any(draft_dir.glob("*.safetensors")):
        raise CliError("--draft", draft_dir, "no *.safetensors weights in this folder",
                       "give the folder of a saved drafter")
    # both models are loaded in --dtype, so the dtypes on disk need not agree
    target_cfg = {k: v for k, v in target_cfg.items() if k not in ("dtype", "torch_dtype")}
    try:
        DrafterConfig.from_file(draft_dir).check_against_target(target_cfg)
    except ConfigError as exc:
        raise CliError("--draft", draft_dir, f"does not fit --target {target_dir}: {exc}",
                       "give the drafter trained for this target") from None


# ---- loading ------------------------------------------------------------------------------------
def load_tokenizer(target_dir: Path | None):
    if target_dir is None or not ((target_dir / "tokenizer.json").is_file()
                                  or (target_dir / "tokenizer_config.json").is_file()):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(target_dir))


def load_pair(target_dir: Path, draft_dir: Path, dtype: str, device: str):
    """The target (HF causal LM) and its drafter, both in ``dtype`` on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..config import ConfigError
    from ..core.drafter import DominoDrafter

    torch_dtype = getattr(torch, dtype)
    target = AutoModelForCausalLM.from_pretrained(str(target_dir), dtype=torch_dtype)
    target = target.to(device).eval()
    try:
        drafter = DominoDrafter.from_pretrained(draft_dir, dtype=torch_dtype, device=device)
    except ConfigError as exc:
        raise CliError("--draft", draft_dir, str(exc), "give a drafter saved in the public "
                       "Domino format") from None
    return target, drafter.eval()


def random_pair(dtype: str, device: str):
    import torch

    from ..hf.tiny import build_tiny_drafter, build_tiny_target

    target = build_tiny_target(vocab_size=512, hidden_size=128, num_layers=4)
    drafter = build_tiny_drafter(target, block_size=8)
    torch_dtype = getattr(torch, dtype)
    return target.to(device, torch_dtype).eval(), drafter.to(device, torch_dtype).eval()


def encode(tok, prompt: str, chat: bool, vocab: int) -> list[int]:
    if tok is None:  # random model: hash the characters into the vocabulary
        return [2 + (ord(c) % (vocab - 3)) for c in prompt]
    if chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                      add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tok(prompt)["input_ids"])


# ---- the run ------------------------------------------------------------------------------------
def _median_run(runs):
    """The run with the median wall time (its tokens, rounds and draft/verify split)."""
    order = sorted(runs, key=lambda r: r.total_time_s)
    return order[(len(order) - 1) // 2]


def _progress(total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generate", unit="run", file=sys.stderr,
                disable=quiet or not sys.stderr.isatty())


def cmd_generate(args) -> int:
    target_dir, draft_dir = validate(args)
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # our own bar covers the run

    from ..hf.generate import domino_generate, target_generate

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device_name(args.device)
    tok = load_tokenizer(target_dir)
    vocab = (json.loads((target_dir / "config.json").read_text()).get("vocab_size")
             if target_dir is not None else 512)
    prompts = args.prompt or DEFAULT_PROMPTS
    encoded = []
    for prompt in prompts:
        ids = encode(tok, prompt, args.chat, vocab)
        if not ids:
            raise CliError("--prompt", prompt, "encodes to no tokens", "give some text")
        encoded.append(ids)

    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.pair == "cpu-demo" else "float32"
    if args.pair == "cpu-demo":
        target_dir, draft_dir = demo_pair(target_dir, draft_dir, args.quiet)
    if target_dir is None:
        logger.info("tiny random pair (no real text: token ids are printed)")
        target, drafter = random_pair(args.dtype, device)
    else:
        logger.info("loading %s and %s (%s, %s)", target_dir, draft_dir, args.dtype, device)
        target, drafter = load_pair(target_dir, draft_dir, args.dtype, device)
    k = drafter.config.resolved_block_size
    if args.verify_width is not None and args.verify_width > k - 1:
        raise CliError("--verify-width", args.verify_width, f"larger than the drafter's block "
                       f"of {k} tokens allows", f"use 1 .. {k - 1}")
    stop = []
    if tok is not None and tok.eos_token_id is not None:
        stop = [tok.eos_token_id]
    elif getattr(target.config, "eos_token_id", None) is not None:
        eos = target.config.eos_token_id
        stop = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens, stop_token_ids=stop)
    methods = {"domino": dict(use_head=True, verify_width=args.verify_width)}
    if drafter.has_head:
        methods["dflash-drafting (head off)"] = dict(use_head=False,
                                                     verify_width=args.verify_width)
    methods["plain decoding"] = None
    greedy = args.temperature == 0

    results, failed = [], False
    bar = _progress(len(encoded) * (1 + args.repeats * len(methods)), args.quiet)
    for prompt, ids in zip(prompts, encoded):
        ids_t = torch.tensor([ids], device=device)
        # warm-up so that first-call overheads count against neither side
        domino_generate(target, drafter, ids_t, max_new_tokens=4, stop_token_ids=stop)
        bar.update(1)
        runs: dict[str, list] = {name: [] for name in methods}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every method
            for name, kw in methods.items():
                gen = torch.Generator().manual_seed(args.seed)
                if kw is None:
                    r = target_generate(target, ids_t, generator=gen, **sampling)
                else:
                    r = domino_generate(target, drafter, ids_t, generator=gen, **sampling, **kw)
                runs[name].append(r)
                bar.update(1)
        med = {name: _median_run(rs) for name, rs in runs.items()}
        plain = med["plain decoding"]
        text = (tok.decode(med["domino"].tokens, skip_special_tokens=True) if tok is not None
                else " ".join(map(str, med["domino"].tokens)))
        bar.clear()
        print(f"\n=== prompt: {prompt!r}\n{text}\n")
        print(f"{'method':<28}{'tokens':>8}{'tau':>8}{'tok/s':>10}{'speedup':>9}")
        for name, r in med.items():
            tau = f"{r.tau:.2f}" if r.rounds else "-"
            print(f"{name:<28}{len(r.tokens):>8}{tau:>8}{r.tokens_per_s:>10.1f}"
                  f"{r.tokens_per_s / plain.tokens_per_s:>8.2f}x")
        print(f"(tok/s: median of {args.repeats} run{'s' if args.repeats > 1 else ''})")
        same = {name: r.tokens == plain.tokens for name, r in med.items() if methods[name]}
        if greedy:
            for name, ok in same.items():
                if ok:
                    print(f"greedy check: {name} output is identical to plain decoding "
                          f"({len(plain.tokens)} tokens)")
                else:
                    tie = near_tie(target, ids, plain.tokens, med[name].tokens, args.dtype)
                    if tie["near_tie"]:
                        print(f"greedy check: {name} output is identical to plain decoding up "
                              f"to new token {tie['position']}, where the target's two best "
                              f"logits are {tie['gap']:.4g} apart ({tie['gap_ulps']:.1f} "
                              f"{args.dtype} steps at {tie['magnitude']:.3g}): a rounding near-"
                              "tie between the 1-token and the many-token forward, not a "
                              "logic error (--dtype float32 compares without bf16 rounding)")
                    else:
                        print(f"greedy check: {name} output DIFFERS from plain decoding at new "
                              f"token {tie['position']} ({tie})", file=sys.stderr)
                        failed = True
        else:
            print(f"sampling (temperature {args.temperature:g}): each method's output is one "
                  "sample of the same distribution; samples are not compared token by token")
        d = med["domino"]
        results.append({
            "prompt": prompt, "text": text,
            "identical_to_plain": (same if greedy else None),
            **{name: {"tokens": len(r.tokens), "tau": r.tau, "rounds": r.rounds,
                      "tokens_per_s": r.tokens_per_s, "time_s": r.total_time_s,
                      "times_s": [x.total_time_s for x in runs[name]],
                      "draft_time_s": r.draft_time_s, "verify_time_s": r.verify_time_s}
               for name, r in med.items()},
            "speedup": d.tokens_per_s / plain.tokens_per_s})
    bar.close()
    explain_speed(results, target, drafter, device)
    if args.pair == "cpu-demo":
        params = sum(t.numel() for t in target.parameters()) / 1e9
        print(f"\nPair: the project's trained pair ({DEFAULT_PAIR[0]}, 3.8M parameters) "
              f"embedded into a {params:.2f}B-parameter Qwen3 shape (domino_sglang.bench."
              "inflate: the same function, every matrix at full size), so that one decode step "
              "is bound by reading the weights, as for a real LLM. On the tiny pair itself "
              "(--pair tiny) a CPU step costs a few ms of Python overhead and a speculative "
              "round does not pay for itself.")
    if args.json:
        from ..bench.harness import provenance

        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "device": device, "pair": args.pair,
                                         "dtype": args.dtype, "threads": torch.get_num_threads(),
                                         "provenance": provenance(), "results": results},
                                        indent=2))
    return 1 if failed else 0


def near_tie(target, prompt_ids: list[int], plain: list[int], other: list[int],
             dtype: str) -> dict:
    """The first differing new token: the target's logits there (the shared prefix, one
    forward) and whether the two tokens are within TIE_ULPS rounding steps of ``dtype``."""
    import torch

    from ..bench.ties import ulp

    j = next((i for i, (a, b) in enumerate(zip(plain, other)) if a != b),
             min(len(plain), len(other)))
    out = {"position": j, "near_tie": False}
    if j >= min(len(plain), len(other)) or dtype == "float32":
        return out
    dev = next(target.parameters()).device
    ctx = torch.tensor([list(prompt_ids) + list(plain[:j])], device=dev)
    with torch.inference_mode():
        logits = target(ctx).logits[0, -1].float()
    la, lb = float(logits[plain[j]]), float(logits[other[j]])
    mag = max(abs(la), abs(lb))
    step = ulp(mag, dtype)
    gap = abs(la - lb)
    out.update(gap=gap, magnitude=mag, gap_ulps=gap / step, plain_token=plain[j],
               other_token=other[j], near_tie=gap <= TIE_ULPS * step)
    return out


def explain_speed(results: list[dict], target, drafter, device: str) -> None:
    """One short paragraph when Domino is slower than plain decoding, from the measured times."""
    if not results:
        return
    d = [r["domino"] for r in results]
    p = [r["plain decoding"] for r in results]
    # over all prompts: tokens/s of each method on the whole set (median runs)
    overall = (sum(x["tokens"] for x in d) / sum(x["time_s"] for x in d)) / \
        (sum(x["tokens"] for x in p) / sum(x["time_s"] for x in p))
    if overall >= 1.0:
        return
    ms_token = 1000 * sum(x["time_s"] for x in p) / max(1, sum(x["tokens"] for x in p))
    rounds = max(1, sum(x["rounds"] for x in d))
    ms_round = 1000 * sum(x["time_s"] for x in d) / rounds
    tau = sum(x["tokens"] for x in d) / rounds
    params = sum(t.numel() for t in target.parameters()) / 1e6
    k = drafter.config.resolved_block_size
    print(f"\nWhy Domino is slower here ({overall:.2f}x over all prompts): this target "
          f"({params:.1f}M parameters, {device}) makes one token in {ms_token:.1f} ms, while "
          f"one Domino round (draft + verify of a {k}-token block) takes {ms_round:.1f} ms and "
          f"commits {tau:.2f} tokens. Speculative decoding pays off when one target step is "
          "expensive (large models on a GPU; see the README's results).")


def main(argv: list[str] | None = None) -> int:
    def body(argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False)
                            else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        if args.command == "generate":
            return cmd_generate(args)
        return 2

    return run_cli(PROG, argv, body)


if __name__ == "__main__":
    sys.exit(main())
