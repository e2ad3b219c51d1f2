"""Sampled losslessness on the GPU at drafted positions, with a power check (issues #18, #15).

A sampled speculative decoder is lossless iff every token it emits follows the target's
distribution at its prefix. The first token of a request comes from the target's prefill (no
draft, no verify), so this test looks at positions 1..K-1 of K-token samples: every one of them
was produced by a draft -> verify -> accept round.

Servers, in parallel on one GPU (the trained tiny pair by default, or any ``--pair``):

* ``plain``: the target alone; it gives the reference distribution at every prefix (top
  ``--top-logprobs`` log-probabilities, the rest of the mass as one bin) and its own samples are
  the control (they must pass: that checks the reference and the test itself);
* ``domino``: chain mode, the project's sampled verify (the default);
* ``domino_tree``: tree mode (SGLang's tree sampling kernel), ``--tree-topk`` / ``--tree-budget``;
* ``planted``: chain mode with ``DOMINO_SAMPLED_VERIFY=planted-wrong-residual``, a deliberately
  wrong verifier (after a rejection it draws from p instead of p without the rejected draft).
  The test must FAIL on it: that is the power check;
* ``planted_tree``: the same planted bug in tree mode (the bonus drawn from the full p of the
  last accepted node, ``tree_glue.planted_wrong_residual_bonus``), the tree path's power check;
* ``domino_sd`` / ``planted_sd``: chain mode with ``DOMINO_SAMPLED_DRAFTS=1`` (drafts sampled
  from the head's q, verified with q), and its planted twin (after a rejection it draws from q
  instead of the residual max(p - q, 0); until session 16 it drew from p, a bias this test had
  ~10 % power to catch at the tiny pair's real p and q: ``benchmarks/plant_power_cpu.py``).

For each system and sampling config (``t1``: temperature 1; ``t07k8``: temperature 0.7, top-k 8,
whose reference is the top-8 of the target's log-probabilities renormalised at 1/0.7) it draws
``--samples-per-prompt`` samples of ``--tokens`` tokens on each of ``--num-prompts`` held-out
prompts (``ignore_eos``), maps each token at positions >= 1 through the reference distribution
at its prefix to a randomized PIT value (Uniform(0, 1) iff lossless), and runs a chi-square
test of uniformity on ``--bins`` bins, pooled and per position. Prefixes whose top-k boundary is
a near-tie (``--topk-margin``) are left out (a choice made from the prefix alone keeps the PIT uniform).

Verdict (pre-registered): every lossless system has p >= ``--alpha`` (0.001) in every config it
ran; each planted system has p < ``--power-alpha`` (1e-6); ``plain`` (the control) passes.
Configurations run whole or not at all: one that the time budget cannot fit (the mean time of a
finished set x its systems) is skipped entirely and listed, so a lossless system is never left
without its planted twin; a set cut by the budget inside a configuration counts as a failure.
(Since 2026-12-07; before, the budget could cut the last configuration's planted set, as in
``session13_20261207/h100_sampled_tree``, whose verdict says ok: False.)

Usage (GPU host, after ``source benchmarks/gpu_preamble.sh``; ~4-6 min with start-up)::

    timeout -s TERM 560 python3 benchmarks/sampled_gpu.py --out-dir $OUT --commit SHA

Writes ``sampled_gpu_<stamp>.json`` / ``.md`` with provenance and the server log tails; exit
code 1 when the verdict fails.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from domino_sglang.bench.client import http_json, server_accept_length
from domino_sglang.bench.dist import pit_value, top_logprob_pairs, uniformity_test
from domino_sglang.bench.harness import Budget, Run, progress_printer, provenance_lines, Terminated, run_phase
from domino_sglang.bench.servers import Server, sglang_command, start_all
from domino_sglang.bench.side_by_side import load_prompt_ids
from domino_sglang.bench.systems import ServerOpts, resolve_pair, system_flags

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> (temperature, top_k); top_k -1: none
    "t1": (1.0, -1),
    "t07k8": (0.7, 8),
}
SYSTEMS = {  # name -> (side-by-side system, extra environment)
    "plain": ("ar", {}),
    "domino": ("domino", {}),
    "domino_tree": ("domino_tree", {}),
    "planted": ("domino", {"DOMINO_SAMPLED_VERIFY": "planted-wrong-residual"}),
    "planted_tree": ("domino_tree", {"DOMINO_SAMPLED_VERIFY": "planted-wrong-residual"}),
    "domino_sd": ("domino", {"DOMINO_SAMPLED_DRAFTS": "1"}),
    "planted_sd": ("domino", {"DOMINO_SAMPLED_DRAFTS": "1",
                              "DOMINO_SAMPLED_VERIFY": "planted-wrong-residual"}),
}
PLANTED = ("planted", "planted_tree", "planted_sd")
say = progress_printer("sampled_gpu")


# ---- reference distributions ------------------------------------------------------------------
def reference_probs(tops: list[tuple[int, float]], temperature: float,
                    top_k: int, margin: float = 0.0) -> dict | None:
    """The request's sampling distribution from the target's T=1 top log-probabilities: at
    temperature 1 without top-k the top entries themselves (the rest of the mass stays
    implicit); with top-k, the top-k entries at 1/temperature, renormalised. None when the top-k
    boundary is within ``margin`` nats (membership ambiguous: the reference comes from a prefill
    forward, the sample from a decode batch, and bf16 logits round differently there) or too
    few entries came back."""
    if top_k < 0:
        if temperature != 1.0:
            raise ValueError("a temperature other than 1 needs top_k (the tail is unknown)")
        return {t: math.exp(lp) for t, lp in tops}
    if len(tops) <= top_k or tops[top_k - 1][1] - tops[top_k][1] <= margin:
        return None
    w = {t: math.exp((lp - tops[0][1]) / temperature) for t, lp in tops[:top_k]}
    z = sum(w.values())
    return {t: v / z for t, v in w.items()}


def target_tops(url: str, ids: list[int], k: int, timeout: float) -> list | None:
    try:
        body = http_json(url + "/generate", {
            "input_ids": ids, "sampling_params": {"max_new_tokens": 1, "temperature": 1.0},
            "return_logprob": True, "top_logprobs_num": k}, timeout=timeout)
    except (OSError, ValueError):
        return None
    tops = ((body or {}).get("meta_info") or {}).get("output_top_logprobs") or []
    return top_logprob_pairs(tops[0]) if tops else None


def sample(url: str, ids: list[int], n_tokens: int, temperature: float, top_k: int,
           timeout: float) -> list[int] | None:
    sp = {"max_new_tokens": n_tokens, "temperature": temperature, "top_p": 1.0,
          "top_k": top_k, "ignore_eos": True}
    try:
        body = http_json(url + "/generate", {"input_ids": ids, "sampling_params": sp},
                         timeout=timeout)
    except (OSError, ValueError):
        return None
    out = (body or {}).get("output_ids")
    return list(map(int, out)) if isinstance(out, list) and len(out) == n_tokens else None


def pit_analysis(seqs: list[tuple[int, list[int]]], tops: dict,
                 temperature: float, top_k: int, bins: int, seed: int,
                 margin: float = 0.0) -> dict:
    """seqs [(prompt index, tokens)], tops {(prompt index, prefix tuple): top logprobs}."""
    rng = random.Random(seed)
    pooled, per_pos = [], {}
    missing = ambiguous = outside = 0
    for pi, toks in seqs:
        for j in range(1, len(toks)):
            t = tops.get((pi, tuple(toks[:j])))
            if t is None:
                missing += 1
                continue
            ref = reference_probs(t, temperature, top_k, margin)
            if ref is None:
                ambiguous += 1
                continue
            if top_k > 0 and toks[j] not in ref:
                outside += 1  # a token the request's top-k excludes: a hard failure
            u = pit_value(ref, toks[j], rng.random())
            pooled.append(u)
            per_pos.setdefault(j, []).append(u)
    # the mean PIT (0.5 when lossless, sd 1/sqrt(12 n)): a one-number direction of a bias (a
    # verifier that favours the target's likely tokens pulls it below 0.5); reported beside the
    # pre-registered chi-square, not part of the verdict
    mean = sum(pooled) / len(pooled) if pooled else None
    z = (mean - 0.5) * math.sqrt(12 * len(pooled)) if pooled else None
    return {"samples": len(seqs), "pit_values": len(pooled), "missing_reference": missing,
            "mean_pit": None if mean is None else round(mean, 5),
            "mean_pit_z": None if z is None else round(z, 2),
            "ambiguous_top_k_boundary": ambiguous, "outside_top_k": outside,
            "pooled": uniformity_test(pooled, bins),
            "per_position": {j: uniformity_test(us, bins) for j, us in sorted(per_pos.items())}}


# ---- the run ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", default="tiny", help="'tiny' (assets/domino-tiny) or a pair folder")
    ap.add_argument("--prompts", default=str(ROOT / "assets/domino-tiny/heldout_prompts.jsonl"))
    ap.add_argument("--systems", default="domino,planted,plain,domino_tree,planted_tree",
                    help=f"comma list from {list(SYSTEMS)} (order = priority under the budget)")
    ap.add_argument("--configs", default="t1,t07k8", help=f"comma list from {list(CONFIGS)}")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--samples-per-prompt", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=8, help="tokens per sample (positions 1.. are "
                    "tested)")
    ap.add_argument("--top-logprobs", type=int, default=20)
    ap.add_argument("--bins", type=int, default=20)
    ap.add_argument("--topk-margin", type=float, default=0.07,
                    help="prefixes whose k-th and (k+1)-th log-probabilities are within this "
                    "many nats are left out of top-k configs (about one bf16 ulp of a logit "
                    "below 16: prefill and decode round differently there)")
    ap.add_argument("--alpha", type=float, default=1e-3)
    ap.add_argument("--power-alpha", type=float, default=1e-6)
    ap.add_argument("--concurrency", type=int, default=48)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--mem-fraction", type=float, default=0.15)
    ap.add_argument("--tree-topk", type=int, default=4)
    ap.add_argument("--tree-budget", type=int, default=32)
    ap.add_argument("--base-port", type=int, default=31400)
    ap.add_argument("--startup-timeout", type=float, default=240)
    ap.add_argument("--request-timeout", type=float, default=60)
    ap.add_argument("--time-budget-s", type=float, default=540)
    ap.add_argument("--commit", default=None, help="the commit that runs (the host's .git may "
                    "be stale)")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--dry-run", action="store_true", help="print the server commands, start "
                    "nothing")
    return ap


def _names(raw: str, allowed, what: str) -> list[str]:
    out = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [x for x in out if x not in allowed]
    if bad or not out:
        raise SystemExit(f"sampled_gpu.py: error: {what} {bad or raw!r}: expected a comma list "
                         f"from {list(allowed)}")
    return out


def make_servers(args, systems: list[str], out_dir: Path) -> dict[str, Server]:
    pair = resolve_pair(args.pair)
    if not pair.exists:
        raise SystemExit(f"sampled_gpu.py: error: --pair {args.pair!r}: no target/ + drafters "
                         f"under {pair.root}")
    opts = ServerOpts(dtype=args.dtype, max_total_tokens=65536, max_running_requests=64,
                      tree_topk=args.tree_topk, tree_budget=args.tree_budget)
    servers = {}
    for i, name in enumerate(["plain"] + [s for s in systems if s != "plain"]):
        sysname, env = SYSTEMS[name]
        flags, extra = system_flags(sysname, pair, opts, args.mem_fraction)
        servers[name] = Server(name, args.base_port + i,
                               sglang_command(args.base_port + i, flags),
                               out_dir / f"sampled_gpu_server_{name}.log",
                               env={**os.environ, **extra, **env})
    return servers


def run(args, run_: Run) -> dict:
    res = run_.data
    budget = Budget(args.time_budget_s)
    systems = _names(args.systems, SYSTEMS, "--systems")
    configs = _names(args.configs, CONFIGS, "--configs")
    prompts = load_prompt_ids(Path(args.prompts))[: args.num_prompts]
    res["plan"] = {"systems": systems, "configs": configs, "prompts": len(prompts),
                   "samples_per_prompt": args.samples_per_prompt, "tokens": args.tokens,
                   "alpha": args.alpha, "power_alpha": args.power_alpha, "bins": args.bins}
    servers = make_servers(args, systems, run_.out_dir)
    res["servers"] = {n: " ".join(s.cmd) + "".join(
        f" [{k}={v}]" for k, v in (s.env or {}).items() if k.startswith(("DOMINO_", "SGLANG_S")))
        for n, s in servers.items()}
    if args.dry_run:
        for n, c in res["servers"].items():
            print(f"{n}: {c}")
        return res
    say(f"starting {len(servers)} servers")
    try:
        ready = start_all(servers, args.startup_timeout)
        res["ready"] = {n: (ok, servers[n].ready_s) for n, ok in ready.items()}
        say(f"ready: {res['ready']}")
        if not ready.get("plain"):
            raise RuntimeError("the plain server did not start: no reference")
        results = res.setdefault("results", {})
        tops: dict = {}
        walls: list[float] = []
        for cfg in configs:
            temp, top_k = CONFIGS[cfg]
            runnable = [n for n in systems if ready.get(n)]
            need = (sum(walls) / len(walls)) * len(runnable) + 15 if walls else 45
            if runnable and budget.left() < need:
                # whole configurations or none: a lossless system and its planted twin are
                # measured together (a configuration cut in half would leave one unchecked)
                res.setdefault("skipped_configs", {})[cfg] = (
                    f"time budget: {budget.left():.0f} s left, ~{need:.0f} s needed for "
                    f"{', '.join(runnable)}")
                say(f"{cfg}: skipped whole ({res['skipped_configs'][cfg]})")
                continue
            for name in systems:
                if not ready.get(name):
                    results[f"{name}/{cfg}"] = {"error": "server not ready"}
                    continue
                if budget.left() < 45:
                    results[f"{name}/{cfg}"] = {"error": "skipped: time budget"}
                    continue
                run_phase(res, f"{name}/{cfg}", lambda: results.__setitem__(
                    f"{name}/{cfg}", one_set(servers[name], servers["plain"], prompts, temp,
                                             top_k, tops, args, budget)))
                r = results.get(f"{name}/{cfg}", {})
                if r.get("wall_s"):
                    walls.append(float(r["wall_s"]))
                say(f"{name}/{cfg}: pit n={r.get('pit_values')} "
                    f"p={(r.get('pooled') or {}).get('p_value')} "
                    f"accept={r.get('server_accept_length')}")
                run_.write()
    finally:
        for n, s in servers.items():
            s.stop()
            res.setdefault("log_tails", {})[n] = s.log_tail(15)
            res.setdefault("log_marks", {})[n] = log_marks(s.log_path)
    res["verdict"] = verdict(res, args)
    return res


# the server's own statements of what it runs (which verifier, which drafts, which mode), kept
# so that a result file says which path each server armed: session 15's planted twin of the
# sampled drafts went uncaught and its files could not show whether the plant was armed (it
# was; the test had ~10 % power against it: session 16 notes, section 7)
MARKS = ("DOMINO_SAMPLED_VERIFY", "sampled drafts", "sampled requests", "DELIBERATELY WRONG",
         "domino serve config", "Domino adaptive: batch bucket", "tree mode")


def log_marks(path, limit: int = 40) -> list[str]:
    """Lines of a server log that name the sampled verifier, the drafts and the mode (first
    ``limit``)."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if any(m in line for m in MARKS):
                    out.append(line.rstrip()[:300])
                    if len(out) >= limit:
                        break
    except OSError:
        pass
    return out


def one_set(srv: Server, plain: Server, prompts: list, temp: float, top_k: int, tops: dict,
            args, budget: Budget) -> dict:
    t0 = time.time()
    jobs = [pi for pi in range(len(prompts)) for _ in range(args.samples_per_prompt)]
    with ThreadPoolExecutor(args.concurrency) as pool:
        outs = list(pool.map(lambda pi: (pi, sample(srv.url, prompts[pi], args.tokens, temp,
                                                    top_k, args.request_timeout)), jobs))
    seqs = [(pi, o) for pi, o in outs if o]
    need = sorted({(pi, tuple(o[:j])) for pi, o in seqs for j in range(1, len(o))} - set(tops))

    def fetch(key):
        if budget.left() < 20:
            return key, None
        pi, pre = key
        return key, target_tops(plain.url, prompts[pi] + list(pre), args.top_logprobs,
                                args.request_timeout)

    with ThreadPoolExecutor(args.concurrency) as pool:
        for key, t in pool.map(fetch, need):
            if t:
                tops[key] = t
    out = pit_analysis(seqs, tops, temp, top_k, args.bins, seed=len(seqs),
                       margin=args.topk_margin)
    out.update(failed_requests=len(outs) - len(seqs), wall_s=round(time.time() - t0, 1),
               reference_requests=len(need), server_accept_length=server_accept_length(srv.url))
    return out


def verdict(res: dict, args) -> dict:
    checks = {}
    for key, r in (res.get("results") or {}).items():
        name = key.split("/")[0]
        p = (r.get("pooled") or {}).get("p_value")
        if p is None:
            checks[key] = {"pass": False, "why": r.get("error", "no PIT values")}
        elif name in PLANTED:
            checks[key] = {"pass": p < args.power_alpha,
                           "why": f"power check: p={p:.3g} must be < {args.power_alpha:g}"}
        else:
            ok = p >= args.alpha and not r.get("outside_top_k")
            checks[key] = {"pass": ok, "why": f"p={p:.3g} must be >= {args.alpha:g}; "
                                              f"outside top-k: {r.get('outside_top_k', 0)}"}
    ran = {k.split("/")[0] for k in checks}
    ok = bool(checks) and all(c["pass"] for c in checks.values()) and bool(ran & set(PLANTED))
    return {"ok": ok, "checks": checks, "skipped_configs": res.get("skipped_configs") or {},
            "note": "ok needs every lossless system to pass, the plain control to pass and the "
                    "planted wrong verifier to be caught in every configuration that ran "
                    "(configurations run whole or not at all; a skipped one is listed, not "
                    "counted; a system cut inside a configuration fails)"}


def render(data: dict) -> str:
    meta = data.get("meta", {})
    lines = [f"# Sampled losslessness at drafted positions ({meta.get('date', '')})", "",
             *provenance_lines(meta), f"- plan: {data.get('plan')}",
             f"- servers ready: {data.get('ready')}", "",
             "| system / config | samples | PIT values (pos >= 1) | chi-square p | mean PIT (z) "
             "| ambiguous / missing / outside top-k | accept length | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    checks = (data.get("verdict") or {}).get("checks", {})
    for key, r in (data.get("results") or {}).items():
        p = (r.get("pooled") or {}).get("p_value")
        c = checks.get(key, {})
        lines.append(f"| {key} | {r.get('samples', '-')} | {r.get('pit_values', '-')} | "
                     f"{'-' if p is None else f'{p:.3g}'} | {r.get('mean_pit', '-')} "
                     f"({r.get('mean_pit_z', '-')}) | {r.get('ambiguous_top_k_boundary', '-')}"
                     f" / {r.get('missing_reference', '-')} / {r.get('outside_top_k', '-')} | "
                     f"{r.get('server_accept_length', '-')} | "
                     f"{'PASS' if c.get('pass') else 'FAIL'}: {c.get('why', r.get('error', ''))} |")
    v = data.get("verdict") or {}
    for cfg, why in (v.get("skipped_configs") or {}).items():
        lines += ["", f"Configuration `{cfg}` skipped whole: {why}"]
    lines += ["", f"**Verdict: ok = {v.get('ok')}** ({v.get('note', '')})"]
    for n, marks in (data.get("log_marks") or {}).items():
        lines += ["", f"What `{n}`'s log says it runs:", "", "```", *(marks or ["(nothing)"]),
                  "```"]
    if data.get("errors"):
        lines += ["", f"Errors: {data['errors']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with Run(Path(args.out_dir), "sampled_gpu", argv, args.commit, render=render) as run_:
        try:
            run(args, run_)
        except Terminated:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded in the result files
            run_.data["errors"]["run"] = f"{type(exc).__name__}: {exc}"
    if args.dry_run:
        return 0
    return 0 if (run_.data.get("verdict") or {}).get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
