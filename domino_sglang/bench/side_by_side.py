"""Side-by-side serving benchmark: AR, DFlash (head off), Domino chain, Domino tree, NGRAM on
one GPU, each an SGLang server, the same fixed request set at every concurrency level.

Method (issue 13 item 4):

* one fixed request set per level, built once from the held-out prompts (token ids) and sent
  unchanged to every system: ``max(min_requests, per_slot x concurrency)`` requests, the same
  ``max_new_tokens``, greedy, ``ignore_eos`` (equal lengths), native ``/generate``;
* a warm-up per (system, level) excluded from timing, then ``/flush_cache`` (radix cache and the
  accept counters) before each measured run, ``repeats`` runs per level interleaved across the
  systems (order rotated each repeat), ratios as median with the range over repeats;
* greedy equality against AR on the first ``eq_prompts`` prompts (not ``ignore_eos``), every
  mismatch analysed (:mod:`domino_sglang.bench.ties`), aborted requests counted as such;
* tau = completion tokens / verify steps (``meta_info.spec_verify_ct``); the server's
  ``avg_spec_accept_length`` after the run (counters flushed before it) beside it.

Servers of a wave start in parallel; waves come from the memory plan (``systems.plan_waves``);
AR is started once and stays up (baseline and tie oracle). ``time_budget_s`` drops the largest
levels first (recorded under ``skipped``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shlex
import time
from pathlib import Path

from . import stats
from .adaptive_trace import read_trace, render as render_trace, summarise as summarise_trace
from .client import Client, closed_loop, flush_cache, server_accept_length
from .harness import Budget, Run
from .servers import Server, sglang_command, start_all, stop_all
from .systems import (ORDER, SIMULATED, SYSTEMS, Instance, ServerOpts, mem_fraction_for,
                      plan_waves, resolve_pair, server_memory, system_flags)
from .ties import first_difference, hf_logits_fn, judge, summarize_ties, tie_reports

logger = logging.getLogger(__name__)


def say(msg: str) -> None:
    """Progress lines of the script (the GPU call's log); library code uses the logger."""
    logger.warning(msg)


# ---- request sets ---------------------------------------------------------------------------
def load_prompt_ids(path: Path, tokenizer_dir: Path | None = None) -> list[list[int]]:
    """Token ids of every prompt of a ``.jsonl`` file: ``input_ids`` when present, else
    ``prompt``/``text`` tokenized once with the target's tokenizer."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no prompts")
    if all("input_ids" in r for r in rows):
        return [list(map(int, r["input_ids"])) for r in rows]
    if tokenizer_dir is None:
        raise ValueError(f"{path}: rows without input_ids need the target's tokenizer")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out = []
    for n, r in enumerate(rows, 1):
        if "input_ids" in r:
            out.append(list(map(int, r["input_ids"])))
        elif "prompt" in r or "text" in r:
            out.append(tok(r.get("prompt", r.get("text")))["input_ids"])
        else:
            raise ValueError(f"{path}:{n}: expected input_ids, prompt or text")
    return out


def requests_for_level(level: int, min_requests: int, per_slot: int) -> int:
    return max(min_requests, per_slot * level)


def request_set(prompts: list[list[int]], n: int, max_new_tokens: int, ignore_eos: bool,
                offset: int = 0) -> list[dict]:
    """``n`` requests over the prompts in file order (cycling), greedy."""
    if not prompts:
        raise ValueError("request_set: no prompts")
    sp = {"max_new_tokens": max_new_tokens, "temperature": 0.0}
    if ignore_eos:
        sp["ignore_eos"] = True
    return [{"input_ids": prompts[(offset + i) % len(prompts)], "sampling_params": dict(sp)}
            for i in range(n)]


def set_digest(requests: list[dict]) -> str:
    blob = json.dumps([[r["input_ids"], r["sampling_params"]] for r in requests],
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---- one measured run -----------------------------------------------------------------------
def summarize_run(run, level: int) -> dict:
    """Throughput, TPOT, TTFT, tau of one closed-loop run (only completed requests count)."""
    ok = [r for r in run.results if r.ok]
    tokens = sum(r.completion_tokens for r in ok)
    steps = [r.spec_verify_ct for r in ok if r.spec_verify_ct is not None]
    tpot = [((r.latency_s - r.ttft_s) / (r.completion_tokens - 1)) if r.ttft_s is not None
            else r.latency_s / r.completion_tokens
            for r in ok if r.completion_tokens > (1 if r.ttft_s is not None else 0)]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    return {"level": level, "requests": len(run.results), "completed": len(ok),
            "aborted": sum(r.aborted for r in run.results),
            "errors": sum(not r.ok and not r.aborted for r in run.results),
            "error_samples": sorted({r.error for r in run.results if not r.ok})[:3],
            "wall_s": round(run.wall_s, 4), "output_tokens": tokens,
            "output_tok_s": tokens / run.wall_s if run.wall_s > 0 else None,
            "tpot_p50_ms": None if not tpot else stats.median(tpot) * 1e3,
            "tpot_kind": "streamed" if ttft else "latency / tokens (incl. prefill)",
            "ttft_p50_ms": None if not ttft else stats.median(ttft) * 1e3,
            "verify_steps": sum(steps) if steps else None,
            "tau": (tokens / sum(steps)) if steps and sum(steps) else None}


async def _warm_and_measure(url: str, requests: list[dict], warm: list[dict], level: int,
                            stream: bool, timeout_s: float) -> dict:
    async with Client(url, timeout_s) as c:
        if warm:
            await closed_loop(c, warm, level, stream)
        if not flush_cache(url):
            logger.warning("flush_cache failed on %s (server not idle?)", url)
        run = await closed_loop(c, requests, level, stream)
    res = summarize_run(run, level)
    res["accept_length_server"] = server_accept_length(url)
    return res


def measure(url: str, requests: list[dict], warm: list[dict], level: int, stream: bool,
            timeout_s: float) -> dict:
    return asyncio.run(_warm_and_measure(url, requests, warm, level, stream, timeout_s))


# ---- greedy equality ------------------------------------------------------------------------
async def _greedy_all(urls: dict, requests: list[dict], conc: int, timeout_s: float) -> dict:
    """Each server's greedy outputs, one server after another: servers sharing the GPU at
    once would slow each other's rounds, and the adaptive policy, which learns round costs
    from every round it serves, would start the measured levels with that contention in its
    cost table (session 16's traces: batch-1 rounds of 21 ms in the concurrent equality phase
    against 8.7 ms in the level after it)."""
    outs = {}
    for name, url in urls.items():
        async with Client(url, timeout_s) as c:
            outs[name] = (await closed_loop(c, requests, conc)).results
    return outs


def equality_verdict(prompts: list, ar: list, other: list, ar_url: str, dtype: str,
                     logits_fn=None, ulps: float = 1.0, timeout: float = 60.0,
                     other_url: str | None = None) -> dict:
    """Compare one system's greedy results with AR's (lists of GenResult, same order)."""
    usable = [i for i, (a, b) in enumerate(zip(ar, other)) if a.ok and b.ok]
    ident = [i for i in usable if a_ids(ar[i]) == a_ids(other[i])]
    finish_bad = [i for i in ident if ar[i].finish_type != other[i].finish_type]
    differ = [i for i in usable if i not in ident]
    reports = tie_reports(ar_url, [prompts[i] for i in differ],
                          [a_ids(ar[i]) for i in differ], [a_ids(other[i]) for i in differ],
                          dtype, limit=len(differ), timeout=timeout, logits_fn=logits_fn,
                          ref_finish=[ar[i].finish_reason for i in differ],
                          other_finish=[other[i].finish_reason for i in differ], ulps=ulps,
                          other_url=other_url)
    for r, i in zip(reports, differ):
        r["prompt"] = i
        r["ar_finish"], r["other_finish"] = ar[i].finish_reason, other[i].finish_reason
    s = summarize_ties(reports)
    return {"prompts": len(prompts), "compared": len(usable), "identical": len(ident),
            "mismatches": len(differ), "ties": s["near_ties"],
            "not_ties": len(differ) - s["near_ties"], "max_gap": s["max_gap"],
            "max_gap_ulps": s["max_gap_ulps"],
            "max_reference_gap_ulps": s["max_reference_gap_ulps"],
            "aborted": sum(r.aborted for r in other), "errors": sum(
                not r.ok and not r.aborted for r in other),
            "ar_failed": sum(not r.ok for r in ar),
            "finish_reason_mismatch_on_identical": len(finish_bad),
            "finish_types": sorted({str(r.finish_type) for r in other}),
            "all_mismatches_are_ties": s["all_near_ties"],
            "ok": _equality_ok(s["all_near_ties"], len(finish_bad), len(usable), len(prompts)),
            "first_positions": [first_difference(a_ids(ar[i]), a_ids(other[i]))
                                for i in differ][:20],
            "analysis": reports}


def _equality_ok(all_ties: bool, finish_mismatches: int, compared: int, prompts: int) -> bool:
    """A system's equality passes: every mismatch a tie, no finish-reason mismatch on an
    identical output, every prompt compared."""
    return bool(all_ties and not finish_mismatches and compared == prompts)


def a_ids(r) -> list:
    return list(r.output_ids or [])


# ---- the run --------------------------------------------------------------------------------
def build_instances(systems: list[str], sim: list[float] | None,
                    tree_configs: list[tuple[int, int]] | None = None) -> list[Instance]:
    """The servers of a run, in ORDER; ``tree_configs``: one tree server per (topk, budget)
    in place of the single domino_tree (the tree sweep of #15)."""
    for s in systems:
        if s not in SYSTEMS:
            raise ValueError(f"--systems: unknown system {s!r} (choose from {list(SYSTEMS)})")
    if tree_configs and "domino_tree" not in systems:
        raise ValueError("--tree-configs needs domino_tree in --systems")
    if tree_configs and sim:
        raise ValueError("--tree-configs and --simulate-acc-len do not go together "
                         "(simulated acceptance runs chain mode only)")
    if not sim:
        out = []
        for s in sorted(systems, key=ORDER.index):
            if s == "domino_tree" and tree_configs:
                out += [Instance(s, tree=tc) for tc in tree_configs]
            else:
                out.append(Instance(s))
        return out
    if any(x <= 0 for x in sim):
        raise ValueError(f"--simulate-acc-len {sim}: values must be > 0")
    out = [Instance("ar")] if "ar" in systems else []
    for x in sim:
        out += [Instance(s, x) for s in SIMULATED if s in systems]
    if len(out) < 2:
        raise ValueError("--simulate-acc-len needs ar and at least one of dflash, domino")
    return out


def default_max_total_tokens(prompts: list, levels: list, max_new: int, eq_tokens: int,
                             width: int) -> int:
    """KV tokens for the largest level with the longest prompts, 25 % slack, 4096-aligned."""
    longest = max(len(p) for p in prompts)
    need = max(levels) * (longest + max(max_new, eq_tokens) + 2 * width) * 1.25
    return int(-(-need // 4096) * 4096)


def make_plan(args) -> dict:
    """Everything decided before a server starts (also what ``--dry-run`` prints)."""
    pair = resolve_pair(args.pair)
    prompts = load_prompt_ids(args.prompts, pair.target if pair.exists else None)
    levels = list(dict.fromkeys(args.levels))  # measured in the order given (tables sort them)
    tree_configs = getattr(args, "tree_configs", None)
    instances = build_instances(args.systems, args.simulate_acc_len, tree_configs)
    width = max([pair.block_size or 16, args.tree_budget] + [b for _, b in tree_configs or []])
    opts = ServerOpts(dtype=args.dtype, max_running_requests=max(levels + [args.eq_concurrency]),
                      cuda_graph_bs=tuple(sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128)
                                                  if b <= max(levels)} | set(levels))),
                      tree_topk=args.tree_topk, tree_budget=args.tree_budget,
                      tree_style=args.tree_style, seed=args.seed,
                      simulate_method=args.simulate_method,
                      extra_args=shlex.split(args.extra_server_args))
    opts.max_total_tokens = args.max_total_tokens or default_max_total_tokens(
        prompts, levels, args.max_new_tokens, args.eq_max_new_tokens, width)
    gpu_gb = args.gpu_mem_gb
    if pair.exists:
        need = {i.name: server_memory(i.system, pair, opts, tree=i.tree) for i in instances}
        waves = plan_waves(instances, {k: v["total_gb"] for k, v in need.items()}, gpu_gb)
    else:
        need, waves = {}, [instances]
    plan_waves_out = []
    port = args.base_port
    persistent = waves[0][:1] if waves and waves[0] and waves[0][0].system == "ar" else []
    for w in waves:
        counted = w if w is waves[0] else persistent + w
        total = round(sum(need[i.name]["total_gb"] for i in counted), 2) if need else None
        frac = args.mem_fraction_static or (mem_fraction_for(total, gpu_gb) if total else 0.3)
        if frac is None:
            raise ValueError(f"wave {[i.name for i in w]} needs {total} GB: over the "
                             f"--gpu-mem-gb {gpu_gb} budget; pass fewer --systems")
        servers = []
        for inst in w:
            flags, env = system_flags(inst.system, pair, opts, frac, inst.simulate_acc_len,
                                      inst.tree)
            if getattr(args, "adaptive_trace", False) and inst.system == "domino":
                env["DOMINO_ADAPTIVE_TRACE"] = str(
                    Path(args.out_dir).resolve() / f"adaptive_trace_{inst.name}.jsonl")
            servers.append({"name": inst.name, "system": inst.system,
                            **({"tree": list(inst.tree)} if inst.tree else {}),
                            "simulate_acc_len": inst.simulate_acc_len, "port": port,
                            "flags": flags, "env": env, "mem_fraction_static": frac})
            port += 1
        plan_waves_out.append({"servers": servers, "need_gb": total})
    reqs = {lv: requests_for_level(lv, args.min_requests, args.per_slot) for lv in levels}
    return {"pair": {"name": pair.name, "root": str(pair.root), "target": str(pair.target),
                     "block_size": pair.block_size, "built": pair.exists},
            "prompts": {"path": str(args.prompts), "count": len(prompts)},
            "levels": levels, "requests_per_level": reqs, "repeats": args.repeats,
            "max_new_tokens": args.max_new_tokens, "ignore_eos": True, "stream": args.stream,
            "warmup_requests": args.warmup, "equality": {
                "prompts": args.eq_prompts, "max_new_tokens": args.eq_max_new_tokens,
                "concurrency": args.eq_concurrency, "skipped": bool(args.simulate_acc_len)},
            "simulated": bool(args.simulate_acc_len),
            "simulate_acc_len": args.simulate_acc_len, "gpu_mem_gb": gpu_gb,
            "server_memory_gb": need, "max_total_tokens": opts.max_total_tokens,
            "waves": plan_waves_out, "dtype": args.dtype,
            "time_budget_s": args.time_budget_s, "_prompts": prompts}


def shown(server: dict, launcher: list[str]) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in server["env"].items())
    cmd = shlex.join(launcher_cmd(launcher, server["port"], server["flags"]))
    return f"{env} {cmd}".strip()


def launcher_cmd(launcher: list[str] | None, port: int, flags: list[str]) -> list[str]:
    if not launcher:
        return sglang_command(port, flags)
    return [*launcher, "--host", "127.0.0.1", "--port", str(port), *flags]


_MEM_RE = re.compile(r"(mem usage=[\d.]+ GB|avail mem=[\d.]+ GB|#tokens: \d+|"
                     r"K size: [\d.]+ GB|V size: [\d.]+ GB)")


def log_memory_lines(path: Path, limit: int = 12) -> list[str]:
    """The memory lines of a server log (weights loaded, KV allocated, graphs captured)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln.strip()[-220:] for ln in lines if _MEM_RE.search(ln)][:limit]


_ADAPTIVE_TAG = "Domino adaptive summary: "


def servers_env(plan: dict, name: str) -> dict:
    """The extra environment the plan gives server ``name``."""
    for w in plan["waves"]:
        for srv in w["servers"]:
            if srv["name"] == name:
                return srv["env"]
    return {}


def adaptive_summary(path: Path) -> dict | None:
    """The last adaptive-width summary a Domino server logged (the policy's estimates, the
    width it holds per batch-size bucket and how many rounds it chose each width), or None."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for ln in reversed(lines):
        i = ln.find(_ADAPTIVE_TAG)
        if i >= 0:
            try:
                return json.loads(ln[i + len(_ADAPTIVE_TAG):])
            except json.JSONDecodeError:
                return None
    return None


def estimate_level_s(level: int, n_req: int, max_new: int, history: dict, names: list,
                     repeats: int, warm_s: float = 3.0) -> float | None:
    """Seconds for one level of every named system: requests x tokens / an estimate of the
    system's throughput there, from its nearest measured level: from one below, scaled up by
    sqrt(level / that level) (measured throughput grew 1.6-1.9x per doubling of concurrency
    at 8B cost, session 16, so this overestimates the time; applying c=1's throughput to c=2
    unscaled cut two runs' levels 2-64); from one above only, scaled down in proportion
    (a request is never slower with fewer beside it). None when some system has no history."""
    total = 0.0
    for n in names:
        past = {lv: t for lv, t in (history.get(n) or {}).items() if t}
        if not past:
            return None
        below = [lv for lv in past if lv <= level]
        if below:
            ref = max(below)
            tps = past[ref] * (level / ref) ** 0.5
        else:
            ref = min(past)
            tps = past[ref] * level / ref
        total += repeats * (n_req * max_new / tps) + warm_s
    return total


def run(args, launcher: list[str] | None = None) -> dict:
    """Plan, start, measure, always write. Returns the result data."""
    t0 = time.time()
    plan = make_plan(args)
    prompts = plan.pop("_prompts")
    out_dir = Path(args.out_dir)
    with Run(out_dir, "side_by_side_sim" if plan["simulated"] else "side_by_side",
             args.argv, commit=args.commit, render=render_markdown) as hr:
        hr.data["plan"] = {**plan, "server_commands": [shown(s, launcher) for w in plan["waves"]
                                                        for s in w["servers"]]}
        if plan["simulated"]:
            hr.data["WARNING"] = ("SIMULATED ACCEPTANCE: SGLANG_SIMULATE_ACC_LEN forces the "
                                  "accept length of the dflash/domino servers; their outputs "
                                  "are not the target's and these numbers are NOT measured "
                                  "speedups of real drafting")
            say(hr.data["WARNING"])
        if not plan["pair"]["built"]:
            raise FileNotFoundError(f"--pair {args.pair}: no target/ + drafter-domino/ + "
                                    "drafter-dflash/ there (build it with python -m "
                                    "domino_sglang.bench.inflate ...)")
        logits_fn = None
        if not plan["simulated"]:
            with hr.phase("tie_reference"):
                logits_fn = tie_logits_fn(args)
        budget = Budget(args.time_budget_s, start=t0)
        eq_n = args.eq_prompts
        eq_reqs = request_set(prompts, eq_n, args.eq_max_new_tokens, ignore_eos=False)
        results = hr.data.setdefault("results", {})  # name -> level -> [repeat dicts]
        hr.data["equality"], hr.data["skipped"], hr.data["servers"] = {}, [], {}
        history: dict = {}
        live: dict[str, Server] = {}
        measured_ar = False
        try:
            for wi, wave in enumerate(plan["waves"]):
                new = [s for s in wave["servers"] if s["name"] not in live]
                with hr.phase(f"start_wave{wi}"):
                    say(f"wave {wi}: starting {[s['name'] for s in new]}")
                    objs = {s["name"]: Server(
                        s["name"], s["port"], launcher_cmd(launcher, s["port"], s["flags"]),
                        out_dir / f"{hr.stem}_server_{s['name']}.log",
                        env=dict(os.environ, **s["env"])) for s in new}
                    ready = start_all(objs, args.startup_timeout_s)
                    for n, ok in ready.items():
                        srv = objs[n]
                        hr.data["servers"][n] = {
                            "ready": ok, "ready_s": srv.ready_s, "wave": wi,
                            "command": shown(next(s for s in new if s["name"] == n), launcher),
                            "log": srv.log_path.name}
                        if ok:
                            live[n] = srv
                        else:
                            hr.data["servers"][n]["log_tail"] = srv.log_tail(20)[-2000:]
                            srv.stop()
                    say(f"wave {wi}: ready {json.dumps({n: objs[n].ready_s for n in objs})}")
                names = [s["name"] for s in wave["servers"] if s["name"] in live]
                if "ar" in live and not plan["simulated"]:
                    with hr.phase(f"equality_wave{wi}"):
                        others = [n for n in names if n != "ar"]
                        if others:
                            run_equality(hr, live, others, eq_reqs, args, logits_fn)
                measure_names = [n for n in names if n != "ar" or not measured_ar]
                if getattr(args, "prefill_probe", 0):
                    with hr.phase(f"prefill_probe_wave{wi}"):
                        prefill_probe(hr, live, measure_names, prompts, args)
                with hr.phase(f"sweep_wave{wi}"):
                    sweep(hr, live, measure_names, prompts, plan, args, budget, history,
                          waves_left=len(plan["waves"]) - wi - 1)
                measured_ar = measured_ar or "ar" in measure_names
                for n in names:
                    hr.data["servers"][n]["memory_log"] = log_memory_lines(live[n].log_path)
                    summary = adaptive_summary(live[n].log_path)
                    if summary is not None:
                        hr.data.setdefault("adaptive", {})[n] = summary
                    if n != "ar":
                        live.pop(n).stop()
                    trace = servers_env(plan, n).get("DOMINO_ADAPTIVE_TRACE")
                    if trace and Path(trace).is_file():
                        hr.data.setdefault("adaptive_trace", {})[n] = {
                            "file": Path(trace).name, **summarise_trace(read_trace(trace))}
        finally:
            # the results first: a call's time limit may end the run while servers stop
            hr.data["table"] = build_table(results, plan)
            hr.data["verdict"] = verdict(hr.data)
            hr.write()
            stop_all(live.values())
    say(f"wrote {', '.join(str(p) for p in hr.paths)}")
    return hr.data


def tie_logits_fn(args):
    if args.logit_magnitude:
        mag = float(args.logit_magnitude)

        def fn(context, tokens):
            return {int(t): mag for t in tokens}

        fn.gives_gap = False  # one magnitude for every token: no reference gap to judge by
        return fn
    if args.tie_reference == "none":
        return None
    return hf_logits_fn(args.tie_reference)


def run_equality(hr: Run, live: dict, names: list, eq_reqs: list, args, logits_fn) -> None:
    urls = {n: live[n].url for n in ["ar", *names]}
    outs = asyncio.run(_greedy_all(urls, eq_reqs, args.eq_concurrency, args.request_timeout_s))
    prompts = [r["input_ids"] for r in eq_reqs]
    for n in names:
        hr.data["equality"][n] = equality_verdict(prompts, outs["ar"], outs[n], urls["ar"],
                                                  args.dtype, logits_fn, args.tie_ulps,
                                                  args.request_timeout_s, other_url=urls[n])
        v = hr.data["equality"][n]
        say(f"equality {n}: {v['identical']}/{v['prompts']} identical, {v['mismatches']} "
            f"mismatches ({v['ties']} ties), aborted {v['aborted']}, errors {v['errors']}")


def prefill_probe(hr: Run, live: dict, names: list, prompts: list, args) -> None:
    """What a request costs that ends at its first token (``max_new_tokens`` 1: the prefill,
    for a speculative server the draft KV written for every prompt token, and the request's
    way in and out), one request at a time, each server in turn: the per-request cost that
    short requests under load pay beside their decode rounds."""
    reqs = request_set(prompts, args.prefill_probe, 1, ignore_eos=True)
    warm = request_set(prompts, min(4, args.prefill_probe), 1, ignore_eos=True,
                       offset=len(prompts) // 2)
    for n in names:
        res = measure(live[n].url, reqs, warm, 1, False, args.request_timeout_s)
        done = res["completed"] or 0
        hr.data.setdefault("prefill_probe", {})[n] = {
            "requests": res["requests"], "completed": done, "errors": res["errors"],
            "latency_p50_ms": res["tpot_p50_ms"],
            "mean_ms": round(res["wall_s"] * 1e3 / done, 3) if done else None}
        say(f"prefill probe {n}: p50 {res['tpot_p50_ms']} ms per 1-token request, "
            f"{done}/{res['requests']} ok")


def sweep(hr: Run, live: dict, names: list, prompts: list, plan: dict, args, budget: Budget,
          history: dict, waves_left: int) -> None:
    results = hr.data["results"]
    if not names:
        return
    start_cost = max([s.get("ready_s") or 0 for s in hr.data["servers"].values()] + [60])
    for level in plan["levels"]:
        n_req = plan["requests_per_level"][level]
        reqs = request_set(prompts, n_req, args.max_new_tokens, ignore_eos=True)
        warm = request_set(prompts, min(max(level, args.warmup), n_req), args.warmup_tokens,
                           ignore_eos=True, offset=len(prompts) // 2)
        est = estimate_level_s(level, n_req, args.max_new_tokens, history, names, args.repeats)
        reserve = waves_left * (start_cost + 30) + args.reserve_s
        if est is not None and est > budget.left() - reserve:
            # only this level: a later one in the given order may be cheaper
            hr.data["skipped"].append({"level": level, "systems": names,
                                       "reason": f"time budget: ~{est:.0f} s needed, "
                                       f"{budget.left() - reserve:.0f} s left"})
            say(f"skipping level {level} for {names}: time budget (~{est:.0f} s needed, "
                f"{budget.left() - reserve:.0f} s left)")
            continue
        digest = set_digest(reqs)
        hr.data.setdefault("request_sets", {})[str(level)] = {"requests": n_req,
                                                              "digest": digest}
        for rep in range(args.repeats):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for n in order:
                res = measure(live[n].url, reqs, warm if rep == 0 else [], level, args.stream,
                              args.request_timeout_s)
                res.update(repeat=rep, request_set=digest)
                results.setdefault(n, {}).setdefault(str(level), []).append(res)
                if res["output_tok_s"]:
                    history.setdefault(n, {})[level] = res["output_tok_s"]
                say(f"  c={level} rep {rep} {n}: {res['output_tok_s'] or 0:.1f} tok/s, tau "
                    f"{res['tau'] if res['tau'] is None else round(res['tau'], 2)}, "
                    f"{res['completed']}/{res['requests']} ok")


# ---- tables ---------------------------------------------------------------------------------
def _baseline_for(name: str, kind: str) -> str | None:
    if kind == "ar":
        return "ar"
    sim = name.split("@", 1)[1] if "@" in name else None
    return f"dflash@{sim}" if sim else "dflash"


def build_table(results: dict, plan: dict) -> list[dict]:
    rows = []
    names = [s["name"] for w in plan["waves"] for s in w["servers"]]
    for level in sorted(plan["levels"]):
        for n in names:
            reps = results.get(n, {}).get(str(level))
            if not reps:
                rows.append({"level": level, "system": n, "status": "not run"})
                continue
            tps = [r["output_tok_s"] for r in reps]
            row = {"level": level, "system": n, "status": "ok" if all(
                r["completed"] == r["requests"] for r in reps) else "incomplete",
                "repeats": len(reps), "output_tok_s": stats.summarize(tps).as_dict(),
                "tpot_p50_ms": stats.median([r["tpot_p50_ms"] for r in reps]),
                "ttft_p50_ms": stats.median([r["ttft_p50_ms"] for r in reps]),
                "completed": sum(r["completed"] for r in reps),
                "requests": sum(r["requests"] for r in reps),
                "aborted": sum(r["aborted"] for r in reps),
                "errors": sum(r["errors"] for r in reps)}
            steps = sum(r["verify_steps"] or 0 for r in reps)
            row["tau"] = (sum(r["output_tokens"] for r in reps) / steps) if steps else None
            row["accept_length_server"] = stats.median([r["accept_length_server"]
                                                        for r in reps])
            for kind in ("ar", "dflash"):
                base = _baseline_for(n, kind)
                breps = results.get(base, {}).get(str(level)) if base != n else None
                row[f"x_vs_{kind}"] = (stats.ratio(tps, [r["output_tok_s"] for r in breps])
                                       if breps else None)
            if n.startswith("domino_tree"):  # tree over chain (Domino, adaptive width)
                creps = results.get("domino", {}).get(str(level))
                row["x_vs_chain"] = (stats.ratio(tps, [r["output_tok_s"] for r in creps])
                                     if creps else None)
            rows.append(row)
    return rows


def best_trees(table: list[dict]) -> list[dict]:
    """Per level, the fastest tree server (median tok/s) of those measured, with its ratio to
    chain Domino: what the tree sweep (--tree-configs) is for."""
    out = []
    for level in sorted({r["level"] for r in table}):
        trees = [r for r in table if r["level"] == level and r["system"].startswith(
            "domino_tree") and r.get("status") != "not run" and r["output_tok_s"]["median"]]
        if not trees:
            continue
        best = max(trees, key=lambda r: r["output_tok_s"]["median"])
        out.append({"level": level, "system": best["system"], "tau": best["tau"],
                    "output_tok_s": best["output_tok_s"]["median"],
                    "x_vs_chain": best.get("x_vs_chain"), "x_vs_ar": best.get("x_vs_ar"),
                    "of": len(trees)})
    return out


def rejudge(data: dict, ulps: float | None = None) -> dict:
    """The equality verdicts of a finished run judged again from its stored tie reports (see
    :func:`ties.judge`: a mismatch is a tie when AR's served gap or the fp32 reference gap is
    within the threshold); ``ulps`` defaults to the run's own ``--tie-ulps``. Returns a new
    dict; the reports without a reference gap keep their verdict."""
    import copy

    out = copy.deepcopy(data)
    dtype = out["plan"]["dtype"]
    if ulps is None:
        m = re.search(r"--tie-ulps[ =]([0-9.]+)", (out.get("meta") or {}).get("command", ""))
        ulps = float(m.group(1)) if m else 1.0
    for v in (out.get("equality") or {}).values():
        reps = [judge(r, dtype, ulps) if r.get("ulp") and r.get("logit_gap") is not None
                else r for r in v.get("analysis", [])]
        s = summarize_ties(reps)
        v.update(analysis=reps, ties=s["near_ties"], not_ties=len(reps) - s["near_ties"],
                 all_mismatches_are_ties=s["all_near_ties"],
                 max_reference_gap_ulps=s["max_reference_gap_ulps"])
        v["ok"] = _equality_ok(s["all_near_ties"], v["finish_reason_mismatch_on_identical"],
                               v["compared"], v["prompts"])
    out["verdict"] = verdict(out)
    return out


def verdict(data: dict) -> dict:
    eq = data.get("equality") or {}
    return {"all_mismatches_are_ties": all(v["all_mismatches_are_ties"] for v in eq.values())
            if eq else None,
            "equality_ok": all(v["ok"] for v in eq.values()) if eq else None,
            "mismatches": sum(v["mismatches"] for v in eq.values()),
            "not_ties": sum(v["not_ties"] for v in eq.values()),
            "aborted": sum(v["aborted"] for v in eq.values()) + sum(
                r.get("aborted", 0) for r in data.get("table", []) if "aborted" in r),
            "servers_failed": [n for n, s in data.get("servers", {}).items() if not s["ready"]],
            "levels_skipped": sorted({s["level"] for s in data.get("skipped", [])}),
            "simulated": bool(data.get("plan", {}).get("simulated"))}


METHOD_NOTE = (
    "Why this differs from the 2026-11-29 `compare.py` sweep: that sweep sent 16 chat requests "
    "per 7-second level through `/v1/chat/completions` with streaming (text in and out, the "
    "chat template applied by the server, detokenization and one SSE chunk per step, EOS "
    "honoured so lengths differed per system), one run per level, so a level's tok/s was "
    "dominated by its last few requests (tail: at c=16 the level ended with a partly empty "
    "batch) and by per-chunk overhead that grows with the number of steps (AR streams one "
    "chunk per token, a speculative server one per round). Here every system gets the same "
    "token-id requests of equal length (`ignore_eos`) on native `/generate`, at least "
    "max(64, 4 x c) per level, warm-up excluded, repeated; dtype and GPU are recorded above.")


def _f(v, spec=".1f") -> str:
    return "-" if v is None else f"{v:{spec}}"


def render_markdown(data: dict) -> str:
    meta, plan = data["meta"], data.get("plan", {})
    git = meta.get("git", {})
    out = [f"# Side by side: {meta.get('date')}", ""]
    if data.get("WARNING"):
        out += [f"> **{data['WARNING']}**", ""]
    out += [f"- device: {meta.get('gpu', {}).get('name') or 'no GPU seen'} "
            f"(`{json.dumps(meta.get('gpu', {}).get('gpus'))}`)",
            f"- versions: `{json.dumps(meta.get('versions'))}`",
            f"- commit: `{git.get('commit')}` ({git.get('commit_source')}), dirty: "
            f"{git.get('dirty')} ({git.get('dirty_files_total', 0)} files)"
            + (f"; {git['warning']}" if git.get("warning") else ""),
            f"- command: `{meta.get('command')}`",
            f"- pair: `{plan.get('pair', {}).get('root')}`, dtype {plan.get('dtype')}, block "
            f"{plan.get('pair', {}).get('block_size')}; prompts `{plan.get('prompts', {}).get('path')}`"
            f" ({plan.get('prompts', {}).get('count')})",
            f"- method: native `/generate`, input_ids, greedy, ignore_eos, max_new_tokens "
            f"{plan.get('max_new_tokens')}, requests per level "
            f"`{json.dumps(plan.get('requests_per_level'))}`, {plan.get('repeats')} repeats "
            f"(interleaved, order rotated), warm-up excluded, `/flush_cache` before each run; "
            f"ratios: median of repeats [min-max over every repeat pair]",
            f"- wall: {meta.get('wall_s')} s; servers ready (s): "
            f"`{json.dumps({n: s.get('ready_s') for n, s in data.get('servers', {}).items()})}`",
            ""]
    out += ["| conc. | system | tok/s [spread] | x AR | x DFlash | TPOT p50 ms | tau | "
            "accept (server) | ok / req | aborted |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data.get("table", []):
        if r.get("status") == "not run":
            out.append(f"| {r['level']} | {r['system']} | not run | | | | | | | |")
            continue
        out.append(f"| {r['level']} | {r['system']} | {stats.fmt_summary(r['output_tok_s'])} | "
                   f"{stats.fmt_ratio(r['x_vs_ar'])} | {stats.fmt_ratio(r['x_vs_dflash'])} | "
                   f"{_f(r['tpot_p50_ms'], '.2f')} | {_f(r['tau'], '.2f')} | "
                   f"{_f(r['accept_length_server'], '.2f')} | {r['completed']} / "
                   f"{r['requests']} | {r['aborted']} |")
    trees = best_trees(data.get("table", []))
    if trees and (len({r["system"] for r in data.get("table", [])
                       if r["system"].startswith("domino_tree")}) > 1
                  or any(t["x_vs_chain"] for t in trees)):
        out += ["", "Tree mode: the fastest tree configuration per level (of those run) and its "
                "ratio to chain Domino (adaptive width):", "",
                "| conc. | fastest tree | tok/s | tau | x chain | x AR |",
                "| ---: | --- | ---: | ---: | ---: | ---: |"]
        for t in trees:
            out.append(f"| {t['level']} | {t['system']} (of {t['of']}) | "
                       f"{_f(t['output_tok_s'])} | {_f(t['tau'], '.2f')} | "
                       f"{stats.fmt_ratio(t['x_vs_chain'])} | {stats.fmt_ratio(t['x_vs_ar'])} |")
    eq = data.get("equality") or {}
    if eq:
        out += ["", "Greedy equality vs AR (T=0, EOS honoured): every mismatch analysed at its "
                "first differing token (AR's top logprobs; tie = AR's served gap or the fp32 "
                "reference gap within the dtype's ulp at the logits' magnitude).", "",
                "| system | identical | mismatches | ties | not ties | max gap (ulps) | "
                "max fp32 gap (ulps) | aborted | errors | finish mismatch | all ties |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for n, v in eq.items():
            out.append(f"| {n} | {v['identical']}/{v['prompts']} | {v['mismatches']} | "
                       f"{v['ties']} | {v['not_ties']} | {_f(v['max_gap'], '.4f')} "
                       f"({_f(v['max_gap_ulps'], '.2f')}) | "
                       f"{_f(v.get('max_reference_gap_ulps'), '.2f')} | {v['aborted']} | "
                       f"{v['errors']} | "
                       f"{v['finish_reason_mismatch_on_identical']} | "
                       f"{v['all_mismatches_are_ties']} |")
        for n, v in eq.items():
            for r in v.get("analysis", []):
                if r.get("near_tie"):
                    continue
                out.append(f"\n- **{n}, not a tie**: prompt {r.get('prompt')} position "
                           f"{r.get('position')}: AR {r.get('plain_token')} vs "
                           f"{r.get('other_token')}, served gap {_f(r.get('gap_ulps'), '.2f')} "
                           f"ulps, fp32 gap {_f(r.get('reference_gap_ulps'), '.2f')} ulps, the "
                           f"other server's own prefill gap "
                           f"{_f(r.get('other_server_gap'), '.4f')} (<= 0: it prefers its "
                           f"token) {r.get('reason') or r.get('error') or ''}")
    if data.get("prefill_probe"):
        out += ["", "Prefill probe (requests of one output token, concurrency 1, one server at "
                "a time: the cost of a request beside its decode rounds):", "",
                "| system | requests | completed | latency p50 ms | mean ms |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for n, r in data["prefill_probe"].items():
            out.append(f"| {n} | {r['requests']} | {r['completed']} | "
                       f"{_f(r.get('latency_p50_ms'), '.2f')} | {_f(r.get('mean_ms'), '.2f')} |")
    for n, summ in (data.get("adaptive") or {}).items():
        out += ["", f"Adaptive verify width of `{n}` (the server's last summary: rounds per "
                "width in each batch-size bucket, the width held at the end, measured round "
                f"cost per width; estimated acceptance S(k) {summ.get('survival')}):", "",
                "| bucket | width held | rounds per width | round ms per width | of which "
                "the worker's forward (host ms) |",
                "| ---: | ---: | --- | --- | --- |"]
        for b, st in (summ.get("buckets") or {}).items():
            out.append(f"| {b} | {st.get('current')} | `{json.dumps(st.get('picks'))}` | "
                       f"`{json.dumps(st.get('cost_ms'))}` | "
                       f"`{json.dumps(st.get('forward_ms'))}` |")
    for n, summ in (data.get("adaptive_trace") or {}).items():
        out += ["", f"Per-round trace of `{n}` (`{summ.get('file')}`, DOMINO_ADAPTIVE_TRACE): "
                "period and forward by bucket, width and rounds since the width switch "
                "(run 0 = the switch round):", "", render_trace(summ).rstrip()]
    if data.get("verdict"):
        out += ["", f"Verdict: `{json.dumps(data['verdict'])}`"]
    out += ["", METHOD_NOTE]
    if data.get("skipped"):
        out += ["", "Skipped:", ""] + [f"- c={s['level']} {s['systems']}: {s['reason']}"
                                       for s in data["skipped"]]
    failed = {n: s for n, s in data.get("servers", {}).items() if not s.get("ready")}
    for n, s in failed.items():
        out += ["", f"Server `{n}` failed to start; log tail:", "", "```",
                (s.get("log_tail") or "").rstrip(), "```"]
    if data.get("errors"):
        out += ["", "Errors:", ""] + [f"- `{k}`: {v}" for k, v in data["errors"].items()]
    return "\n".join(out) + "\n"
