"""Transformers-backend speedup: Domino (and head-off DFlash drafting) vs plain decoding.

    python benchmarks/bench_hf.py                      # assets/ pair, 20 ShareGPT prompts, CPU
    python benchmarks/bench_hf.py --device cuda --num-prompts 50 --max-new-tokens 256
    python benchmarks/bench_hf.py --device cuda --target P/target --draft P/drafter-domino \
        --dtype bfloat16 --tag 8b        # an inflated 8B-cost pair (domino_sglang.bench.inflate)

On CUDA the drafts come from the fused Triton head (``--head-impl auto``: weights prepared once,
``hf.generate.prepare_head``); ``--head-impl ref`` runs the PyTorch reference rollout.
A greedy mismatch (bf16/fp16 verify and decode kernels round differently) is analysed at its
first differing token: the target's logits there (the shared prefix, one forward) give the gap
between the two tokens, a tie when within one ulp of the dtype at the logits' magnitude.

For each prompt (chat template applied) it runs HF ``generate(do_sample=False)``, our plain
decoding loop, Domino, and the same drafter with the head off, checks that the greedy outputs are
identical, and reports tokens/s, tau and the speedups. Results (JSON + markdown) go to
``benchmarks/results/hf_<device>_<date>.{json,md}`` with the provenance (``meta``: command, commit
from ``--commit`` / ``$DOMINO_COMMIT`` / git with its dirty state, GPU, versions), also with the
prompts done so far when interrupted (SIGTERM).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from domino_sglang.bench.harness import Run, parse_recording_argv, provenance_lines

ROOT = Path(__file__).resolve().parents[1]


def render_markdown(result: dict) -> str:
    untied = [m for m in result.get("mismatches") or [] if not m.get("tie")]
    lines = [f"# Transformers backend: {result.get('device')}, {result.get('date', '')[:10]}",
             "", *provenance_lines(result.get("meta") or {}),
             f"- {result.get('prompts_done')} of {result.get('num_prompts')} "
             f"{result.get('prompts')} prompts, max {result.get('max_new_tokens')} new tokens, "
             f"greedy, {result.get('dtype')}; greedy mismatches vs HF generate: "
             f"{result.get('greedy_mismatches')} (not ties: {len(untied)}); head: "
             f"{(result.get('head_impl') or {}).get('domino')}", ""]
    if result.get("errors"):
        lines += [f"Errors: {result['errors']}", ""]
    lines += ["| method | tokens | tokens/s | speedup vs HF generate | tau |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for m, r in (result.get("results") or {}).items():
        tau = "-" if r["tau"] is None else f"{r['tau']:.2f}"
        x = r["speedup_vs_hf_generate"]
        lines.append(f"| {m} | {r['tokens']} | {r['tokens_per_s']:.1f} | "
                     + ("-" if x is None else f"{x:.2f}x") + f" | {tau} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=Path, default=ROOT / "assets" / "domino-tiny" / "target")
    p.add_argument("--draft", type=Path, default=ROOT / "assets" / "domino-tiny" / "drafter-domino")
    p.add_argument("--prompts", default="sharegpt", help="sharegpt | humaneval | random | .jsonl")
    p.add_argument("--num-prompts", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--head-impl", choices=["auto", "triton", "ref"], default="auto",
                   help="drafting head: auto = the fused Triton head on CUDA, reference elsewhere")
    p.add_argument("--verify-width", type=int, default=None,
                   help="drafted tokens verified per round (default: the whole block, K-1)")
    p.add_argument("--tag", default="", help="suffix of the result file names (e.g. 8b)")
    p.add_argument("--commit", default=None, help="commit to record (default: $DOMINO_COMMIT "
                   "or git HEAD)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parse_recording_argv(p, argv, __file__)
    cuda = args.device.startswith("cuda")
    stamp = datetime.now(timezone.utc)
    tag = f"hf_{'gpu' if cuda else 'cpu'}_{stamp:%Y%m%d_%H%M}"
    tag += f"_{args.tag}" if args.tag else ""
    # SIGTERM (an outer `timeout`) -> Terminated: the prompts done so far are written
    with Run(args.out, "hf", args.argv, args.commit, render=render_markdown, stem=tag) as run:
        _run(args, run.data)
    print(run.paths[1].read_text())
    return 0 if run.data.get("all_mismatches_are_ties") and not run.data["errors"] else 1


def _run(args, result: dict) -> None:
    """Load the pair, time every method on every prompt; the summary goes into ``result``
    (also when interrupted)."""
    import transformers
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domino_sglang.bench.ties import ulp
    from domino_sglang.core.drafter import DominoDrafter
    from domino_sglang.hf.generate import domino_generate, prepare_head, target_generate
    from domino_sglang.prompts import load_prompts

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    meta = result["meta"]
    result.update({
        "date": meta["date"],
        "device": torch.cuda.get_device_name() if cuda else platform.processor()
        or platform.machine(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "provenance": meta,  # the older name of "meta"
        "command": meta["command"], "target": str(args.target), "draft": str(args.draft),
        "prompts": args.prompts, "num_prompts": args.num_prompts, "prompts_done": 0,
        "max_new_tokens": args.max_new_tokens, "dtype": str(dtype),
        "verify_width": args.verify_width})
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype).to(args.device).eval()
    drafter = DominoDrafter.from_pretrained(args.draft, dtype=dtype, device=args.device).eval()
    tok = AutoTokenizer.from_pretrained(args.target)
    stop = [tok.eos_token_id] if tok.eos_token_id is not None else []
    prompts = load_prompts(args.prompts, args.num_prompts, seed=0)
    result["num_prompts"] = len(prompts)

    def encode(text):
        ids = tok.apply_chat_template([{"role": "user", "content": text}],
                                      add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return torch.tensor([list(ids)[-1024:]], device=args.device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def hf_generate(ids):
        sync()
        t0 = time.perf_counter()
        out = target.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                              eos_token_id=stop or None, pad_token_id=tok.pad_token_id or 0)
        sync()
        return out[0, ids.shape[1]:].tolist(), time.perf_counter() - t0

    def tie_check(ids, ref, out):
        """The first differing token: logits of the target after the shared prefix."""
        j = next((i for i, (a, b) in enumerate(zip(ref, out)) if a != b), min(len(ref), len(out)))
        if j >= min(len(ref), len(out)):
            return {"position": j, "kind": "length", "tie": False}
        ctx = torch.cat([ids, torch.tensor([ref[:j]], dtype=ids.dtype, device=ids.device)], 1)
        with torch.inference_mode():
            lg = target(ctx).logits[0, -1].float()
        a, b = ref[j], out[j]
        gap = abs(float(lg[a]) - float(lg[b]))
        step = ulp(max(abs(float(lg[a])), abs(float(lg[b]))), str(dtype))
        return {"position": j, "plain": a, "spec": b, "logit_plain": float(lg[a]),
                "logit_spec": float(lg[b]), "gap": gap, "ulp": step,
                "tie": dtype != torch.float32 and gap <= step}

    methods = {"hf_generate": None, "plain_loop": None, "domino": True, "dflash_head_off": False}
    totals = {m: {"tokens": 0, "time_s": 0.0, "rounds": 0, "accepted": 0} for m in methods}
    heads = {True: prepare_head(target, drafter, use_head=True, head_impl=args.head_impl)
             if drafter.has_head else None,
             False: prepare_head(target, drafter, use_head=False, head_impl=args.head_impl)}
    mismatches = 0
    mismatch_reports = []
    warm = encode(prompts[0])
    for use in (True, False):
        if use and not drafter.has_head:
            continue
        domino_generate(target, drafter, warm, max_new_tokens=8, stop_token_ids=stop,
                        use_head=use, head=heads[use])
    hf_generate(warm)
    try:
        for pi, text in enumerate(tqdm(prompts, desc="prompts", disable=not sys.stderr.isatty())):
            ids = encode(text)
            ref, t = hf_generate(ids)
            totals["hf_generate"]["tokens"] += len(ref)
            totals["hf_generate"]["time_s"] += t
            r = target_generate(target, ids, max_new_tokens=args.max_new_tokens,
                                stop_token_ids=stop)
            totals["plain_loop"]["tokens"] += len(r.tokens)
            totals["plain_loop"]["time_s"] += r.total_time_s
            for name, head in (("domino", True), ("dflash_head_off", False)):
                if not head or drafter.has_head:
                    r = domino_generate(target, drafter, ids, max_new_tokens=args.max_new_tokens,
                                        stop_token_ids=stop, use_head=head, head=heads[head],
                                        verify_width=args.verify_width)
                    if r.tokens != ref:
                        mismatches += 1
                        mismatch_reports.append({"method": name, "prompt": pi,
                                                 **tie_check(ids, ref, r.tokens)})
                    t_ = totals[name]
                    t_["tokens"] += len(r.tokens)
                    t_["time_s"] += r.total_time_s
                    t_["rounds"] += r.rounds
                    t_["accepted"] += sum(r.accept_lens)
            result["prompts_done"] = pi + 1
    finally:
        head_impl = {k: ("triton" if h is not None else "ref") for k, h in heads.items()}
        result.update({
            "head_impl": {"domino": head_impl[True], "dflash_head_off": head_impl[False]},
            "greedy_mismatches": mismatches, "mismatches": mismatch_reports,
            "all_mismatches_are_ties": not [m for m in mismatch_reports if not m["tie"]],
            "results": speed_rows(totals)})


def speed_rows(totals: dict) -> dict:
    """method -> tokens, time, tokens/s, speedup over HF generate, tau (methods that ran)."""
    rows = {}
    base = totals["hf_generate"]["tokens"] / max(totals["hf_generate"]["time_s"], 1e-9)
    for m, t in totals.items():
        if t["tokens"] == 0:
            continue
        tps = t["tokens"] / t["time_s"]
        rows[m] = {"tokens": t["tokens"], "time_s": t["time_s"], "tokens_per_s": tps,
                   "speedup_vs_hf_generate": tps / base if base else None,
                   "tau": t["accepted"] / t["rounds"] if t["rounds"] else None}
    return rows


if __name__ == "__main__":
    sys.exit(main())
