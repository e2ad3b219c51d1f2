#!/usr/bin/env python3
"""How far an fp16 forward pass moves the target's top-2 logit gap, and how often two fp16
computations of the same next-token logits pick different tokens: the rounding that greedy
equality at 8B cost (fp16, the inflated tiny target) has to live with (issue #13 item 5).

The tiny target of ``--pair`` on the CPU, on the side by side's equality prompts (the first
``--num-prompts`` of ``heldout_prompts.jsonl``, up to ``--max-new-tokens`` greedy tokens of the
fp32 model, stopping at EOS). At every generated position the next-token logits are computed
four ways over the same prefix:

* ``fp32``: one forward pass over the whole sequence in fp32 (the reference, as the tie judge's
  ``hf_logits_fn``);
* ``prefill``: the same in fp16 (the plain server's prefill: many tokens per forward);
* ``decode``: fp16, the prompt as one prefill, then one token per forward with the KV cache
  (plain decoding);
* ``verify``: fp16, the prompt as one prefill, then ``--block`` tokens per forward with the KV
  cache (the shape of a speculative verify).

For each position, with ``a`` / ``b`` the fp32 top-2 tokens and ``u`` the fp16 spacing at their
magnitude (``ties.ulp``): the exact gap ``(l32[a] - l32[b]) / u`` and each fp16 path's signed gap
in ulps; each path's argmax. Reported: the spread of each path's gap error against fp32 and of
``decode`` against ``verify`` (the two computations a greedy comparison of plain and speculative
decoding pits against each other), how often those two pick different tokens, binned by the
exact gap, and every position named with ``--at PROMPT:POS`` (e.g. the 8B run's one
unexplained mismatch, ``5:31``) in full, with the share of all positions whose gap two
computations move by at least that position's exact gap.

The inflated 8B-cost target computes the same function with extra zero channels and layers of
zero output; its rounding differs in detail (other kernels, other norm magnitudes), so this
measures the size of fp16 rounding at these logits, not the GPU's exact values. CPU only, ~1 min::

    python3 benchmarks/fp16_noise_cpu.py --at 5:31 --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domino_sglang.bench.harness import Run, parse_recording_argv, provenance_lines  # noqa: E402
from domino_sglang.bench.stats import percentile  # noqa: E402
from domino_sglang.bench.ties import ulp  # noqa: E402

PATHS = ("prefill", "decode", "verify")
BINS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, math.inf)


def _at(text: str) -> tuple[int, int]:
    try:
        p, q = text.split(":")
        return int(p), int(q)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at {text!r}: expected PROMPT:POSITION, e.g. 5:31")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=str(ROOT / "assets/domino-tiny"),
                    help="folder with target/ and heldout_prompts.jsonl")
    ap.add_argument("--num-prompts", type=int, default=64,
                    help="the side by side's --eq-prompts (64)")
    ap.add_argument("--max-new-tokens", type=int, default=64,
                    help="the side by side's --eq-max-new-tokens (64 in the 8B calls)")
    ap.add_argument("--block", type=int, default=16, help="tokens per verify forward (16)")
    ap.add_argument("--at", type=_at, action="append", default=[],
                    help="PROMPT:POSITION to report in full (repeatable)")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks/results")
    return ap


def _greedy32(model, prompt: list, n: int, eos: int | None) -> list:
    from domino_sglang.hf.generate import target_generate

    with torch.no_grad():
        return target_generate(model, torch.tensor([prompt]), max_new_tokens=n,
                               stop_token_ids=() if eos is None else (eos,)).tokens


@torch.no_grad()
def _chunked(model, seq: list, n_prompt: int, step: int) -> torch.Tensor:
    """fp logits predicting seq[n_prompt:], the prompt in one forward and then ``step`` tokens
    per forward with the KV cache: [len(seq) - n_prompt, vocab]."""
    o = model(torch.tensor([seq[:n_prompt]]), use_cache=True)
    past, rows = o.past_key_values, [o.logits[0, -1:]]
    i = n_prompt
    while i < len(seq) - 1:
        j = min(i + step, len(seq) - 1)
        o = model(torch.tensor([seq[i:j]]), past_key_values=past, use_cache=True)
        past = o.past_key_values
        rows.append(o.logits[0])
        i = j
    return torch.cat(rows).float()


def _spread(xs: list) -> dict:
    if not xs:
        return {"n": 0}
    a = sorted(abs(x) for x in xs)
    return {"n": len(xs), "mean_abs": round(sum(a) / len(a), 3),
            "p50_abs": round(percentile(a, 50), 3), "p90_abs": round(percentile(a, 90), 3),
            "p99_abs": round(percentile(a, 99), 3), "max_abs": round(a[-1], 3)}


def render(data: dict) -> str:
    lines = ["# fp16 rounding of the tiny target's top-2 logit gap (CPU)", "",
             *provenance_lines(data.get("meta") or {}),
             f"- {data.get('prompts')} prompts, {data.get('positions')} generated positions "
             f"(fp32 greedy, <= {data.get('max_new_tokens')} tokens); verify block "
             f"{data.get('block')}", "",
             "Gap error in fp16 ulps at the logits' magnitude (|path gap - reference|):", "",
             "| comparison | n | mean | p50 | p90 | p99 | max |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in (data.get("gap_error_ulps") or {}).items():
        if s.get("n"):
            lines.append(f"| {name} | {s['n']} | {s['mean_abs']} | {s['p50_abs']} | "
                         f"{s['p90_abs']} | {s['p99_abs']} | {s['max_abs']} |")
    lines += ["", "Positions where `decode` and `verify` (fp16) pick different tokens, by the "
              "exact (fp32) gap:", "", "| exact gap (ulps) | positions | decode != verify | "
              "decode != fp32 | verify != fp32 |", "| --- | ---: | ---: | ---: | ---: |"]
    for b in data.get("flips_by_gap") or []:
        lines.append(f"| {b['bin']} | {b['positions']} | {b['decode_vs_verify']} | "
                     f"{b['decode_vs_fp32']} | {b['verify_vs_fp32']} |")
    for a in data.get("at") or []:
        lines += ["", f"At prompt {a['prompt']}, position {a['position']}: "
                  + json.dumps({k: v for k, v in a.items() if k not in ("prompt", "position")})]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_recording_argv(build_parser(), argv, __file__)
    from transformers import AutoModelForCausalLM

    pair = Path(args.pair)
    m32 = AutoModelForCausalLM.from_pretrained(str(pair / "target"), dtype=torch.float32).eval()
    m16 = AutoModelForCausalLM.from_pretrained(str(pair / "target"), dtype=torch.float16).eval()
    eos = m32.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    prompts = [json.loads(x)["input_ids"] for x in
               (pair / "heldout_prompts.jsonl").read_text().splitlines()
               if x.strip()][: args.num_prompts]
    errs = {f"{p} vs fp32": [] for p in PATHS} | {"decode vs verify": []}
    bins = [{"lo": BINS[i], "hi": BINS[i + 1], "positions": 0, "decode_vs_verify": 0,
             "decode_vs_fp32": 0, "verify_vs_fp32": 0} for i in range(len(BINS) - 1)]
    wanted = {tuple(a) for a in args.at}
    at, positions = [], 0
    with Run(args.out_dir, "fp16_noise", args.argv, args.commit, render=render) as run, \
            torch.no_grad():
        for pi, prompt in enumerate(prompts):
            gen = _greedy32(m32, prompt, args.max_new_tokens, eos)
            seq, n0 = list(prompt) + gen, len(prompt)
            x = torch.tensor([seq[:-1]])
            l32 = m32(x).logits[0, n0 - 1:].float()
            paths = {"prefill": m16(x).logits[0, n0 - 1:].float(),
                     "decode": _chunked(m16, seq, n0, 1),
                     "verify": _chunked(m16, seq, n0, args.block)}
            top = l32.topk(2, dim=-1).indices
            for k in range(len(gen)):
                a, b = int(top[k, 0]), int(top[k, 1])
                u = ulp(max(abs(float(l32[k, a])), abs(float(l32[k, b]))), "float16")
                exact = float(l32[k, a] - l32[k, b]) / u
                gaps = {p: float(v[k, a] - v[k, b]) / u for p, v in paths.items()}
                picks = {p: int(v[k].argmax()) for p, v in paths.items()}
                for p in PATHS:
                    errs[f"{p} vs fp32"].append(gaps[p] - exact)
                errs["decode vs verify"].append(gaps["decode"] - gaps["verify"])
                positions += 1
                for bn in bins:
                    if bn["lo"] <= exact < bn["hi"]:
                        bn["positions"] += 1
                        bn["decode_vs_verify"] += picks["decode"] != picks["verify"]
                        bn["decode_vs_fp32"] += picks["decode"] != a
                        bn["verify_vs_fp32"] += picks["verify"] != a
                if (pi, k) in wanted:
                    at.append({"prompt": pi, "position": k, "fp32_top2": [a, b],
                               "ulp": u, "exact_gap_ulps": round(exact, 3),
                               **{f"{p}_gap_ulps": round(g, 3) for p, g in gaps.items()},
                               **{f"{p}_pick": t for p, t in picks.items()}})
            for (wp, wk) in sorted(wanted):
                if wp == pi and wk >= len(gen):
                    at.append({"prompt": pi, "position": wk, "missing":
                               f"the fp32 greedy run of this prompt has {len(gen)} tokens"})
            if (pi + 1) % 16 == 0:
                print(f"{pi + 1}/{len(prompts)} prompts, {positions} positions", flush=True)
        for bn in bins:
            bn["bin"] = f"[{bn['lo']}, {bn['hi']})"
        for a in at:  # how often fp16 rounding moves a gap by as much as this exact gap
            if "missing" in a:
                continue
            g = abs(a["exact_gap_ulps"])
            for name in ("decode vs verify", "verify vs fp32", "decode vs fp32"):
                xs = errs[name]
                a[f"share_{name.replace(' ', '_')}_ge_gap"] = round(
                    sum(abs(x) >= g for x in xs) / len(xs), 4)
        run.data.update(prompts=len(prompts), positions=positions, block=args.block,
                        max_new_tokens=args.max_new_tokens,
                        gap_error_ulps={k: _spread(v) for k, v in errs.items()},
                        flips_by_gap=bins, at=at)
        print(render(run.data))
    print(f"wrote {', '.join(str(x) for x in run.paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
