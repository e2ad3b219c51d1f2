"""`python -m domino_sglang` / `domino`: Transformers-backend demos.

    python -m domino_sglang generate                      # embedded default pair (assets/)
    python -m domino_sglang generate --target DIR --draft DIR --prompt "..." --max-new-tokens 128

Prints the text, tau (tokens committed per verification round) and tokens/s for Domino, the
same drafter with its head off (plain DFlash drafting), and plain decoding, side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_PROMPTS = ["Explain why the sky is blue in two sentences.",
                   "Write a Python function that checks whether a number is prime."]


def _default_pair() -> tuple[Path | None, Path | None]:
    target, draft = ASSETS / "domino-tiny" / "target", ASSETS / "domino-tiny" / "drafter-domino"
    if (target / "config.json").exists() and (draft / "config.json").exists():
        return target, draft
    return None, None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="domino", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate with Domino vs plain decoding (Transformers)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--target", type=Path, default=None,
                   help="HF target model dir (default: assets/target, else a tiny random Qwen3)")
    g.add_argument("--draft", type=Path, default=None,
                   help="drafter dir in the public Domino format (default: assets/domino)")
    g.add_argument("--prompt", action="append", default=None,
                   help="prompt text (repeatable); default: two built-in prompts")
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                   help="apply the tokenizer's chat template when it has one")
    g.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0, help="0 = off")
    g.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampling uniforms")
    g.add_argument("--device", default="cuda" if _cuda() else "cpu", help="torch device")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    g.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _load(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..config import DrafterConfig
    from ..core.drafter import DominoDrafter
    from ..hf.tiny import build_tiny_drafter, build_tiny_target

    dtype = getattr(torch, args.dtype)
    target_dir, draft_dir = args.target, args.draft
    if target_dir is None and draft_dir is None:
        target_dir, draft_dir = _default_pair()
    if target_dir is None:
        logging.warning("no trained pair under %s: using a tiny random Qwen3 and drafter "
                        "(acceptance will be low; token ids are printed)", ASSETS)
        target = build_tiny_target(vocab_size=512, hidden_size=128, num_layers=4)
        drafter = build_tiny_drafter(target, block_size=8)
        return target.to(args.device, dtype), drafter.to(args.device, dtype), None
    if draft_dir is None:
        raise SystemExit("--draft: required when --target is given")
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=dtype).to(args.device).eval()
    DrafterConfig.from_file(draft_dir).check_against_target(target.config)
    drafter = DominoDrafter.from_pretrained(draft_dir, dtype=dtype, device=args.device).eval()
    tok = None
    if (Path(target_dir) / "tokenizer.json").exists() or (Path(target_dir) / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(target_dir)
    return target, drafter, tok


def _encode(tok, prompt: str, chat: bool, vocab: int, device):
    import torch

    if tok is None:  # random model: hash the characters into the vocabulary
        ids = [2 + (ord(c) % (vocab - 3)) for c in prompt]
    elif chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                      add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
    else:
        ids = tok(prompt)["input_ids"]
    return torch.tensor([list(ids)], device=device)


def cmd_generate(args) -> int:
    import torch

    from ..hf.generate import domino_generate, target_generate

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_new_tokens < 1:
        raise SystemExit(f"--max-new-tokens={args.max_new_tokens}: must be >= 1")
    target, drafter, tok = _load(args)
    stop = []
    if tok is not None and tok.eos_token_id is not None:
        stop = [tok.eos_token_id]
    elif getattr(target.config, "eos_token_id", None) is not None:
        eos = target.config.eos_token_id
        stop = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    results = []
    for prompt in args.prompt or DEFAULT_PROMPTS:
        ids = _encode(tok, prompt, args.chat, target.config.vocab_size, args.device)
        runs = {}
        # warm-up so that first-call overheads do not count against either side
        domino_generate(target, drafter, ids, max_new_tokens=4, stop_token_ids=stop)
        for name, fn in [
            ("domino", lambda g: domino_generate(target, drafter, ids, generator=g,
                                                 max_new_tokens=args.max_new_tokens,
                                                 stop_token_ids=stop, **sampling)),
            ("dflash-drafting (head off)", lambda g: domino_generate(
                target, drafter, ids, generator=g, max_new_tokens=args.max_new_tokens,
                stop_token_ids=stop, use_head=False, **sampling)),
            ("plain decoding", lambda g: target_generate(
                target, ids, generator=g, max_new_tokens=args.max_new_tokens,
                stop_token_ids=stop, **sampling)),
        ]:
            if name.startswith("dflash") and not drafter.has_head:
                continue
            runs[name] = fn(torch.Generator().manual_seed(args.seed))
        text = (tok.decode(runs["domino"].tokens, skip_special_tokens=True) if tok is not None
                else " ".join(map(str, runs["domino"].tokens)))
        print(f"\n=== prompt: {prompt!r}\n{text}\n")
        base_tps = runs["plain decoding"].tokens_per_s
        print(f"{'method':<28}{'tokens':>8}{'tau':>8}{'tok/s':>10}{'speedup':>9}")
        for name, r in runs.items():
            tau = f"{r.tau:.2f}" if r.rounds else "-"
            print(f"{name:<28}{len(r.tokens):>8}{tau:>8}{r.tokens_per_s:>10.1f}"
                  f"{r.tokens_per_s / base_tps:>8.2f}x")
        if args.temperature == 0 and runs["domino"].tokens != runs["plain decoding"].tokens:
            print("ERROR: greedy Domino output differs from plain decoding", file=sys.stderr)
            return 1
        results.append({"prompt": prompt, "text": text, **{
            name: {"tokens": len(r.tokens), "tau": r.tau, "tokens_per_s": r.tokens_per_s,
                   "draft_time_s": r.draft_time_s, "verify_time_s": r.verify_time_s}
            for name, r in runs.items()}})
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        return cmd_generate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
