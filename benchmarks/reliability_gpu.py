"""Reliability on a GPU (Issue 7): bad requests, client aborts, mixed load, KV-slot leaks,
losslessness at scale, against a plain SGLang server and a ``--speculative-algorithm domino``
server on the same target, started in parallel in one call.

Phases (each bounded by a per-request timeout and by the global ``--budget-s``; a hang is
recorded as a finding, never waited on; results are written even on SIGTERM):

a. ``bad_requests``: every request row of ``docs/bad_inputs.md`` against the Domino server:
   a 4xx (or an error event / abort with status 400 in the body) with a message naming the
   problem, or the documented accepted behavior; after each, a normal request must succeed.
e. ``greedy_scale``: >= 200 held-out prompts (``assets/domino-tiny/heldout_prompts.jsonl``),
   greedy, ``--greedy-max-tokens`` (64), plain vs Domino token for token (servers in parallel,
   prompts one at a time on each so that batch composition does not differ).
b. ``aborts``: 16 streams closed by the client after a few chunks; the server must stay up
   and drain them (no running requests left).
d. ``loads``: after ``/flush_cache`` ``/v1/loads`` reports 0 used KV tokens (measured after
   b and again at the end).
c. ``mixed``: greedy, sampled, JSON-schema (greedy and sampled) and aborted streams in one
   concurrent burst, sent to both servers; greedy and greedy-JSON outputs compared with plain.
f. ``distribution``: T=1 on a fixed prompt. (f1) first-token histogram of the Domino server
   (N samples) against the target's probabilities from the plain server's top logprobs,
   chi-square (the plain server's own histogram is the control). The first token comes from the
   target's prefill, so (f2) also tests the drafted positions: M samples of 8 tokens, each token
   mapped through the target's next-token distribution at its prefix (plain server, top
   logprobs) to a randomized PIT value, which is Uniform(0, 1) iff the Domino sampler is
   lossless; chi-square on 10 bins, for position 0 and for positions 1..7.
g. ``liveness``: both server processes alive, scheduler exceptions counted in the logs.

Usage (on the H200, same preamble as ``e2e_gpu.py``; <= 9.5 min including ~140 s start-up)::

    timeout -s TERM 580 python3 benchmarks/reliability_gpu.py --out-dir $OUT

Writes ``reliability_<stamp>.json`` and ``reliability_<stamp>.md`` (per-check pass/fail) and
the server logs to ``--out-dir``; exit code 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from domino_sglang.bench.client import (Resp, call, call_stream, classify, error_message,
                                        flush_cache_response, load_summary, loads_now,
                                        served_model_id)
from domino_sglang.bench.dist import (chi_square_gof, parse_top_logprobs, pit_value,
                                      uniformity_test)
from domino_sglang.bench.harness import (Budget, Run, add_seed_extra_commit_args,
                                         environment_fields,
                                         parse_recording_argv,
                                         provenance_lines, run_phase, stamp)
from domino_sglang.bench.reliability import (BAD_REQUESTS, DEFAULT_DRAFT, DEFAULT_PROMPTS,
                                             DEFAULT_TARGET, SCHEMA, checks_markdown,
                                             judge_bad_case, json_output_ok,
                                             normal_request_ok)
from domino_sglang.bench.servers import (Server, scan_log, server_flags, sglang_command,
                                         spec_flags, start_all)
from domino_sglang.bench.side_by_side import load_prompt_ids
from domino_sglang.bench.ties import first_difference, summarize_ties, tie_reports


def compare_greedy(ref: list, other: list) -> dict:
    """Token-for-token comparison of two lists of output-id lists (None = failed request)."""
    same, diffs, failed = 0, [], 0
    for i, (a, b) in enumerate(zip(ref, other)):
        if a is None or b is None:
            failed += 1
            continue
        if a == b:
            same += 1
        else:
            diffs.append({"prompt": i, "position": first_difference(a, b), "len_ref": len(a),
                          "len_other": len(b)})
    return {"identical": same, "compared": len(ref) - failed, "failed": failed,
            "total": len(ref), "first_differences": diffs[:10], "num_different": len(diffs)}


# ---- phases -----------------------------------------------------------------------------------
def gen_ids(url: str, ids: list, sp: dict, timeout: float, **extra) -> tuple[list | None, Resp]:
    r = call(url + "/generate", {"input_ids": ids, "sampling_params": sp, **extra},
             timeout=timeout)
    if classify(r) != "ok" or not isinstance(r.body, dict):
        return None, r
    return r.body.get("output_ids"), r


def phase_bad_requests(srv: Server, ctx: dict, args, budget: Budget, res: dict) -> None:
    rows = []
    for case in BAD_REQUESTS:
        if budget.left() < 10:
            rows.append({"name": case.name, "pass": False, "outcome": "skipped (budget)"})
            continue
        payload = case.build(ctx)
        url = srv.url + case.endpoint
        if case.stream:
            r = call_stream(url, payload, timeout=args.request_timeout)
        else:
            r = call(url, payload, timeout=args.request_timeout)
        rows.append(judge_bad_case(case, r, normal_request_ok(srv.url, ctx,
                                                              args.request_timeout)))
    res["bad_requests"] = rows


def phase_greedy_scale(servers: dict, prompts: list, args, budget: Budget, res: dict) -> None:
    sp = {"max_new_tokens": args.greedy_max_tokens, "temperature": 0.0}

    def run_all(name):
        outs = []
        for ids in prompts:
            if budget.left() < 5:
                outs.append(None)
                continue
            out, _ = gen_ids(servers[name].url, ids, sp, args.request_timeout)
            outs.append(out)
        return outs

    with ThreadPoolExecutor(2) as pool:
        plain, dom = pool.map(run_all, ["plain", "domino"])
    res["_plain_greedy"] = plain  # reused by the mixed phase (dropped from the JSON)
    res["greedy_scale"] = {**compare_greedy(plain, dom), "max_new_tokens": args.greedy_max_tokens,
                           **analyse_ties(servers["plain"].url, prompts, plain, dom, args),
                           "tokens_domino": sum(len(o) for o in dom if o),
                           "plain_failed": sum(o is None for o in plain),
                           "domino_failed": sum(o is None for o in dom)}


def analyse_ties(plain_url: str, prompts: list, ref: list, other: list, args,
                 limit: int = 30) -> dict:
    """Near-tie analysis (domino_sglang.bench.ties) of the first ``limit`` mismatches."""
    reports = tie_reports(plain_url, prompts, ref, other, args.dtype, limit,
                          timeout=args.request_timeout)
    return {"tie_analysis": reports, "ties": summarize_ties(reports)}


def phase_aborts(srv: Server, prompts: list, args, res: dict, key: str = "aborts") -> None:
    payload = [{"input_ids": p, "sampling_params": {"max_new_tokens": 512, "temperature": 0.0,
                                                    "ignore_eos": True}} for p in prompts]
    with ThreadPoolExecutor(len(payload)) as pool:
        rs = list(pool.map(lambda p: call_stream(srv.url + "/generate", p,
                                                 timeout=args.request_timeout,
                                                 abort_after=args.abort_after_chunks), payload))
    drained = wait_idle(srv, 20.0)
    res[key] = {"streams": len(rs), "closed_by_client": sum(r.aborted_by_client for r in rs),
                "outcomes": _count([classify(r) for r in rs]),
                "chunks": [r.chunks for r in rs], "drained": drained,
                "normal_request_after": normal_request_ok(srv.url, {"prompt_ids": prompts[0]},
                                                          args.request_timeout)}


def _count(xs) -> dict:
    d: dict = {}
    for x in xs:
        d[x] = d.get(x, 0) + 1
    return d


def wait_idle(srv: Server, timeout: float) -> dict:
    """Poll /v1/loads until no request runs or waits (aborted streams drained)."""
    t0, last = time.time(), {}
    while time.time() - t0 < timeout:
        r = call(srv.url + "/v1/loads", timeout=5)
        if classify(r) == "ok":
            last = load_summary(r.body)
            if not last.get("num_running_reqs") and not last.get("num_waiting_reqs"):
                return {"idle": True, "after_s": round(time.time() - t0, 1), **last}
        time.sleep(0.5)
    return {"idle": False, "after_s": round(time.time() - t0, 1), **last}


def phase_loads(servers: dict, res: dict, key: str) -> None:
    out = {}
    for name, srv in servers.items():
        before = wait_idle(srv, 15.0)
        flush = flush_cache_response(srv.url, tries=5, pause_s=1.0, timeout=15)
        time.sleep(1.0)
        out[name] = {"before_flush": before, "flush_status": flush.status,
                     "flush_body": str(flush.body)[:200], "after_flush": loads_now(srv.url)}
    res[key] = out


def mixed_requests(prompts: list, n_greedy: int, n_sampled: int, n_json: int,
                   n_abort: int, max_tokens: int) -> list[dict]:
    """The mixed burst: dicts {kind, index, payload, stream, abort_after}."""
    reqs = []
    for i in range(min(n_greedy, len(prompts))):  # prompt i: compared with plain's output i
        reqs.append({"kind": "greedy", "index": i, "payload": {
            "input_ids": prompts[i], "sampling_params": {"max_new_tokens": max_tokens,
                                                         "temperature": 0.0}}})
    for i in range(n_sampled):
        p = prompts[(n_greedy + i) % len(prompts)]
        reqs.append({"kind": "sampled", "index": i, "payload": {
            "input_ids": p, "sampling_params": {"max_new_tokens": max_tokens,
                                                "temperature": 0.7, "top_p": 0.9}}})
    for i in range(n_json):
        p = prompts[i % len(prompts)]
        temp = 0.0 if i % 2 == 0 else 0.8
        reqs.append({"kind": "json_greedy" if temp == 0 else "json_sampled", "index": i,
                     "payload": {"input_ids": p, "sampling_params": {
                         "max_new_tokens": 96, "temperature": temp,
                         "json_schema": json.dumps(SCHEMA)}}})
    for i in range(n_abort):
        p = prompts[(i * 7) % len(prompts)]
        reqs.append({"kind": "abort", "index": i, "stream": True, "abort_after": 3, "payload": {
            "input_ids": p, "sampling_params": {"max_new_tokens": 512, "temperature": 0.0,
                                                "ignore_eos": True}}})
    random.Random(0).shuffle(reqs)
    return reqs


def _send(srv: Server, rq: dict, timeout: float) -> dict:
    url = srv.url + "/generate"
    if rq.get("stream"):
        r = call_stream(url, rq["payload"], timeout=timeout, abort_after=rq.get("abort_after"))
    else:
        r = call(url, rq["payload"], timeout=timeout)
    body = r.body if isinstance(r.body, dict) else {}
    outcome = classify(r)
    return {"kind": rq["kind"], "index": rq["index"], "outcome": outcome,
            "output_ids": body.get("output_ids"), "text": body.get("text"),
            "finish_reason": (body.get("meta_info") or {}).get("finish_reason"),
            "message": error_message(r) if outcome not in ("ok", "client_abort") else ""}


def phase_mixed(servers: dict, prompts: list, args, res: dict) -> None:
    reqs = mixed_requests(prompts, args.mixed_greedy, args.mixed_sampled, args.mixed_json,
                          args.mixed_aborts, args.greedy_max_tokens)

    def burst(name):
        with ThreadPoolExecutor(len(reqs)) as pool:
            return list(pool.map(lambda rq: _send(servers[name], rq, args.request_timeout),
                                 reqs))

    with ThreadPoolExecutor(2) as pool:
        plain, dom = pool.map(burst, ["plain", "domino"])
    res["mixed"] = summarize_mixed(plain, dom, res.get("_plain_greedy"))
    ref = (res.get("_plain_greedy") or [])[: args.mixed_greedy]
    if ref:
        res["mixed"]["greedy_ties"] = analyse_ties(servers["plain"].url, prompts, ref,
                                                   _mixed_ids(dom, "greedy"), args)


def _mixed_ids(rows: list, kind: str) -> list:
    """Output ids of one kind of the mixed burst, by index (None: not ok)."""
    sel = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["index"])
    return [r["output_ids"] if r["outcome"] == "ok" else None for r in sel]


def summarize_mixed(plain: list, dom: list, plain_seq: list | None) -> dict:
    """Per kind outcome counts; greedy (and greedy JSON) Domino vs plain; JSON validity."""
    def by_kind(rows):
        out: dict = {}
        for r in rows:
            out.setdefault(r["kind"], {})
            out[r["kind"]][r["outcome"]] = out[r["kind"]].get(r["outcome"], 0) + 1
        return out

    s = {"domino_outcomes": by_kind(dom), "plain_outcomes": by_kind(plain)}
    g_dom, g_plain = _mixed_ids(dom, "greedy"), _mixed_ids(plain, "greedy")
    s["greedy_domino_vs_plain_batched"] = compare_greedy(g_plain, g_dom)
    if plain_seq:
        ref = plain_seq[: len(g_dom)]
        s["greedy_domino_vs_plain_sequential"] = compare_greedy(ref, g_dom)
        s["greedy_plain_batched_vs_sequential"] = compare_greedy(ref, g_plain)  # control
    s["json_greedy_domino_vs_plain"] = compare_greedy(_mixed_ids(plain, "json_greedy"),
                                                      _mixed_ids(dom, "json_greedy"))
    valid = [json_output_ok(r["text"], r["finish_reason"]) for r in dom
             if r["kind"].startswith("json") and r["outcome"] == "ok"]
    s["json_domino_valid"] = sum(v for v, _ in valid)
    s["json_domino_ok"] = len(valid)
    s["json_domino_notes"] = sorted({n for v, n in valid if not v})[:5]
    s["domino_errors"] = [{"kind": r["kind"], "outcome": r["outcome"], "message": r["message"]}
                          for r in dom if r["outcome"] not in ("ok", "client_abort")][:10]
    return s


def _sample_first(srv: Server, ids: list, n: int, conc: int, timeout: float,
                  max_tokens: int = 1) -> tuple[list, dict]:
    # ignore_eos: an EOS draw is kept as a token (dropping stopped positions would bias the
    # PIT); it does not mask EOS
    sp = {"max_new_tokens": max_tokens, "temperature": 1.0, "top_p": 1.0, "ignore_eos": True}

    def one(_):
        out, r = gen_ids(srv.url, ids, sp, timeout)
        return out, classify(r)

    with ThreadPoolExecutor(conc) as pool:
        rs = list(pool.map(one, range(n)))
    return [o for o, _ in rs if o], _count([c for _, c in rs])


def target_dist(srv: Server, ids: list, k: int, timeout: float) -> dict | None:
    """The target's next-token distribution after ids (top-k, plain server, T=1)."""
    r = call(srv.url + "/generate", {
        "input_ids": ids, "sampling_params": {"max_new_tokens": 1, "temperature": 1.0},
        "return_logprob": True, "top_logprobs_num": k}, timeout=timeout)
    if classify(r) != "ok" or not isinstance(r.body, dict):
        return None
    tops = (r.body.get("meta_info") or {}).get("output_top_logprobs") or []
    return parse_top_logprobs(tops[0]) if tops else None


def phase_distribution(servers: dict, prompt: list, args, budget: Budget, res: dict) -> None:
    plain, dom = servers["plain"], servers["domino"]
    out: dict = {"prompt_len": len(prompt), "top_logprobs_num": args.top_logprobs}
    res["distribution"] = out
    probs = target_dist(plain, prompt, args.top_logprobs, args.request_timeout)
    if not probs:
        out["error"] = "no top logprobs from the plain server"
        return
    out["target_top_mass"] = round(sum(probs.values()), 4)
    # f1: first token, Domino vs the target's probabilities; the plain server is the control
    for name, srv in (("domino", dom), ("plain", plain)):
        toks, outcomes = _sample_first(srv, prompt, args.dist_samples, args.dist_concurrency,
                                       args.request_timeout)
        counts = _count([t[0] for t in toks])
        out[f"first_token_{name}"] = {"outcomes": outcomes,
                                      **chi_square_gof(counts, probs)}
        out[f"first_token_{name}"]["bins"] = out[f"first_token_{name}"]["bins"][:12]
    if budget.left() < 60:
        out["pit"] = "skipped (budget)"
        return
    # f2: drafted positions, randomized PIT against the target's distribution at each prefix
    seqs, outcomes = _sample_first(dom, prompt, args.pit_samples, args.dist_concurrency,
                                   args.request_timeout, max_tokens=args.pit_tokens)
    prefixes = sorted({tuple(s[:j]) for s in seqs for j in range(len(s))}, key=len)
    dists: dict = {}

    def fetch(pre):
        if budget.left() < 15:
            return pre, None
        return pre, target_dist(plain, prompt + list(pre), args.top_logprobs,
                                args.request_timeout)

    with ThreadPoolExecutor(args.dist_concurrency) as pool:
        for pre, d in pool.map(fetch, prefixes):
            dists[pre] = d
    rng = random.Random(1)
    u0, u_rest, missing = [], [], 0
    for s in seqs:
        for j, tok in enumerate(s):
            d = dists.get(tuple(s[:j]))
            if not d:
                missing += 1
                continue
            (u0 if j == 0 else u_rest).append(pit_value(d, tok, rng.random()))
    out["pit"] = {"samples": len(seqs), "outcomes": outcomes, "prefixes": len(prefixes),
                  "missing_dists": missing, "position_0": uniformity_test(u0),
                  "positions_1_plus": uniformity_test(u_rest)}


def phase_liveness(servers: dict, ctx: dict, args, res: dict) -> None:
    res["liveness"] = {name: {"alive": s.proc is not None and s.proc.poll() is None,
                              "returncode": s.proc.poll() if s.proc else None,
                              "normal_request_ok": normal_request_ok(s.url, ctx, 20.0),
                              **scan_log(s.log_path)} for name, s in servers.items()}


# ---- verdict + report -------------------------------------------------------------------------
def _used_zero(res: dict, key: str) -> bool | None:
    d = res.get(key, {}).get("domino", {}).get("after_flush", {})
    return None if not d else d.get("num_used_tokens") == 0


def _p_ok(t: Any, alpha: float) -> bool:
    return isinstance(t, dict) and t.get("p_value") is not None and t["p_value"] > alpha


def verdict(res: dict, args) -> dict:
    """check -> True / False / None (None: not measured)."""
    c: dict = {}
    bad = res.get("bad_requests")
    c["bad_requests_all_pass"] = None if bad is None else all(r.get("pass") for r in bad)
    g = res.get("greedy_scale")
    c[f"greedy_identical>={args.min_identical}"] = None if g is None else (
        g["identical"] >= args.min_identical)
    # bf16: a verify forward and a decode forward round differently, so a near-tie may flip;
    # every mismatch must be one (logit gap <= ties.TIE_EPS at the first differing token)
    c["greedy_mismatches_all_near_ties"] = None if g is None else (
        g["num_different"] == 0 or (g["num_different"] <= len(g.get("tie_analysis", []))
                                    and g["ties"]["all_near_ties"]))
    a = res.get("aborts")
    c["aborts_no_crash_and_drained"] = None if a is None else (
        a["closed_by_client"] == a["streams"] and a["drained"].get("idle") is True
        and a["normal_request_after"])
    c["kv_tokens_zero_after_aborts"] = _used_zero(res, "loads_after_aborts")
    m = res.get("mixed")
    if m is None:
        c["mixed_no_errors"] = c["mixed_greedy_identical"] = c["mixed_json_valid"] = None
    else:
        errs = [k for kind, oc in m["domino_outcomes"].items() for k in oc
                if k not in ("ok", "client_abort")]
        c["mixed_no_errors"] = not errs
        ref = m.get("greedy_domino_vs_plain_sequential") or m["greedy_domino_vs_plain_batched"]
        mt = m.get("greedy_ties", {}).get("ties", {})
        c["mixed_greedy_identical"] = ref["failed"] == 0 and (
            ref["num_different"] == 0 or bool(mt.get("all_near_ties")
                                              and mt.get("analysed") == ref["num_different"]))
        c["mixed_json_valid"] = m["json_domino_ok"] > 0 and \
            m["json_domino_valid"] == m["json_domino_ok"]
    c["kv_tokens_zero_at_end"] = _used_zero(res, "loads_final")
    d = res.get("distribution")
    if not isinstance(d, dict) or "first_token_domino" not in d:
        c["first_token_chi_square"] = c["pit_drafted_positions"] = None
    else:
        c["first_token_chi_square"] = _p_ok(d["first_token_domino"], args.alpha)
        pit = d.get("pit")
        c["pit_drafted_positions"] = (_p_ok(pit.get("positions_1_plus"), args.alpha)
                                      if isinstance(pit, dict) else None)
    lv = res.get("liveness")
    c["servers_alive_no_scheduler_exceptions"] = None if lv is None else all(
        v["alive"] and v["normal_request_ok"] and not v.get("scheduler_exceptions")
        for v in lv.values())
    return c


def render_markdown(res: dict) -> str:
    lines = [f"# Reliability run {res.get('started', '')} ({res.get('device', 'GPU')})", "",
             *provenance_lines(res.get("meta") or {}), "",
             f"Servers ready: {res.get('ready_s')}; wall {res.get('wall_s')} s; "
             f"ok: {res.get('ok')}", "", *checks_markdown(res.get("checks"), res.get("error"))]
    bad = res.get("bad_requests") or []
    if bad:
        lines += ["", "## Bad requests (Domino server)", "",
                  "| case | expect | outcome | status | pass | message / note |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in bad:
            msg = (r.get("message") or "").replace("|", "/").replace("\n", " ")[:120]
            note = r.get("note") or ""
            lines.append(f"| {r['name']} | {r.get('expect', '')} | {r.get('outcome')} | "
                         f"{r.get('status', '')} | {'yes' if r.get('pass') else 'NO'} | "
                         f"{msg}{' — ' + note if note else ''} |")
    for key in ("greedy_scale", "aborts", "loads_after_aborts", "mixed", "loads_final",
                "distribution", "liveness"):
        if key in res:
            body = json.dumps(res[key], default=str)
            lines += ["", f"## {key}", "", "```", body[:3000], "```"]
    errs = {k: v for k, v in res.items() if k.startswith("error_")}
    if errs:
        lines += ["", "## Phase errors", ""] + [f"- {k}: `{v}`" for k, v in errs.items()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=str(DEFAULT_TARGET))
    ap.add_argument("--draft", default=str(DEFAULT_DRAFT))
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS), help="jsonl with input_ids")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--dtype", default="bfloat16", help="the checkpoints' dtype")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--mem-fraction", type=float, default=0.3)
    ap.add_argument("--max-total-tokens", type=int, default=262144)
    ap.add_argument("--base-port", type=int, default=31100)
    ap.add_argument("--startup-timeout", type=float, default=200)
    ap.add_argument("--budget-s", type=float, default=540,
                    help="wall budget of the whole script, server start included")
    ap.add_argument("--request-timeout", type=float, default=30.0)
    ap.add_argument("--num-prompts", type=int, default=237, help="greedy-at-scale prompts")
    ap.add_argument("--min-identical", type=int, default=200)
    ap.add_argument("--greedy-max-tokens", type=int, default=64)
    ap.add_argument("--num-aborts", type=int, default=16)
    ap.add_argument("--abort-after-chunks", type=int, default=3)
    ap.add_argument("--mixed-greedy", type=int, default=24)
    ap.add_argument("--mixed-sampled", type=int, default=16)
    ap.add_argument("--mixed-json", type=int, default=8)
    ap.add_argument("--mixed-aborts", type=int, default=8)
    ap.add_argument("--dist-samples", type=int, default=1000)
    ap.add_argument("--dist-concurrency", type=int, default=32)
    ap.add_argument("--pit-samples", type=int, default=200)
    ap.add_argument("--pit-tokens", type=int, default=8)
    ap.add_argument("--top-logprobs", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=1e-3, help="p-value threshold")
    ap.add_argument("--phases", default="bad,greedy,aborts,mixed,dist",
                    help="comma list of bad,greedy,aborts,mixed,dist")
    add_seed_extra_commit_args(ap.add_argument)
    return ap


def main(argv=None) -> int:
    args = parse_recording_argv(build_parser(), argv, __file__)
    t_start = time.time()
    budget = Budget(args.budget_s)
    out_dir = Path(args.out_dir)
    started = stamp()
    # SIGTERM (an outer `timeout`) -> Terminated, caught below: the results are still written
    with Run(out_dir, "reliability", args.argv, args.commit, render=render_markdown,
             stem=f"reliability_{started}") as run:
        res = run.data
        res.update({"args": vars(args), "started": started, "command": res["meta"]["command"],
                    **environment_fields(res["meta"])})
        ok = _run(args, budget, out_dir, run.stem, res)
        res["wall_s"] = round(time.time() - t_start, 1)
    print(json.dumps({k: res.get(k) for k in ("ok", "checks", "ready_s", "wall_s", "error")},
                     indent=1, default=str))
    print("results:", run.paths[0])
    return 0 if ok else 1


def _run(args, budget: Budget, out_dir: Path, stem: str, res: dict) -> bool:
    """Start the two servers, run the phases, fill ``res`` (checks included); -> all pass."""
    cfg = json.loads((Path(args.target) / "config.json").read_text())
    prompts = load_prompt_ids(Path(args.prompts))[: args.num_prompts]
    ctx = {"prompt_ids": prompts[0], "vocab_size": cfg["vocab_size"], "model": "default",
           "context_len": int(cfg.get("max_position_embeddings", 2048))}
    rng = random.Random(args.seed)
    ctx["long_ids"] = [rng.randrange(5, cfg["vocab_size"] - 1)
                       for _ in range(ctx["context_len"] + 500)]
    common = server_flags(args.target, args.dtype, args.mem_fraction, args.max_total_tokens,
                          args.seed, args.extra_server_args)
    spec = spec_flags("domino", args.draft, args.block_size)
    servers = {name: Server(name, args.base_port + i, sglang_command(args.base_port + i, f),
                            out_dir / f"{stem}_server_{name}.log")
               for i, (name, f) in enumerate({"plain": common, "domino": common + spec}.items())}
    phases = set(args.phases.split(","))
    try:
        ready = start_all(servers, min(args.startup_timeout, budget.left()))
        res["ready"], res["ready_s"] = ready, {n: s.ready_s for n, s in servers.items()}
        if all(ready.values()):
            dom = servers["domino"]
            ctx["model"] = served_model_id(dom.url) or args.target
            if "bad" in phases:
                run_phase(res, "bad_requests",
                          lambda: phase_bad_requests(dom, ctx, args, budget, res))
            if "greedy" in phases:
                run_phase(res, "greedy_scale",
                          lambda: phase_greedy_scale(servers, prompts, args, budget, res))
            if "aborts" in phases and budget.left() > 40:
                run_phase(res, "aborts", lambda: phase_aborts(
                    dom, prompts[: args.num_aborts], args, res))
                run_phase(res, "loads_after_aborts",
                          lambda: phase_loads(servers, res, "loads_after_aborts"))
            # sampled requests hung on DFLASH-family servers before: these come last
            if "mixed" in phases and budget.left() > 60:
                run_phase(res, "mixed", lambda: phase_mixed(servers, prompts, args, res))
            if "dist" in phases and budget.left() > 60:
                run_phase(res, "distribution", lambda: phase_distribution(
                    servers, prompts[1], args, budget, res))
            if budget.left() > 25:
                run_phase(res, "loads_final", lambda: phase_loads(servers, res, "loads_final"))
            run_phase(res, "liveness", lambda: phase_liveness(servers, ctx, args, res))
        else:
            res["error"] = f"server(s) failed to start: {ready}"
    except BaseException as exc:  # noqa: BLE001  SIGTERM / Ctrl-C: keep what was measured
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        _stop_all(servers)
        res.pop("_plain_greedy", None)
        res["checks"] = verdict(res, args)
        res["ok"] = bool(res["checks"]) and all(v is True for v in res["checks"].values())
    return res["ok"]


def _stop_all(servers: dict) -> None:
    threads = [threading.Thread(target=s.stop) for s in servers.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)


if __name__ == "__main__":
    sys.exit(main())
