"""Where the time of one speculative round goes: Domino vs head-off DFlash at batch 1 / 16 / 64
(issue 14 item 1), with SGLang's own torch profiler, on one GPU.

The two servers start in parallel on the GPU (the flags of the side-by-side systems ``domino``
and ``dflash``: ``domino_sglang/bench/systems.py``). Then for each batch size b and each system
in turn (the other server idles): a short warm-up at concurrency b, a closed loop that keeps
exactly b requests running (greedy, ``ignore_eos``, long ``max_new_tokens`` capped by the
context), a wait until ``/v1/loads`` shows b running and none waiting, ``POST /start_profile``
(``num_steps`` rounds, CPU + GPU activity, ``with_stack`` off), a wait for the complete trace,
then ``/abort_request`` and a drain. Each trace is reduced on this host
(``domino_sglang/bench/trace.py``): wall / GPU busy / GPU idle per round, kernel time by
category and by name with its launch path (CUDA graph or eager) and host span, host ops by self
time, CUDA API calls per round; then Domino minus DFlash per batch size. Results:
``profile_round_<stamp>.json`` + ``.md`` in ``--out-dir`` (always written, also on SIGTERM),
the server logs beside them, the raw traces only with ``--keep-traces``.

GPU host (after ``source benchmarks/gpu_preamble.sh .device/sglang-trim.tar.xz``)::

    python3 benchmarks/profile_round.py --commit $SHA --out-dir $OUT/profile
    # 8B-cost pair (shorter requests: the KV pool of two 8B servers must fit)
    python3 benchmarks/profile_round.py --pair /tmp/p8b --max-new-tokens 512 ...

``--dry-run`` prints the plan, the server commands and the profile requests; starts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import shutil
import sys
import time
import urllib.error
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from domino_sglang.bench import trace as tr  # noqa: E402
from domino_sglang.bench.client import Client, closed_loop, http_json, load_summary  # noqa: E402
from domino_sglang.bench.harness import (Run, add_memory_plan_args,  # noqa: E402
                                         add_server_run_args, gpu_info, int_list_type,
                                         pair_script_parser, progress_printer,
                                         parse_recording_argv)
from domino_sglang.bench.servers import Server, sglang_command, start_all  # noqa: E402
from domino_sglang.bench.side_by_side import load_prompt_ids, log_memory_lines  # noqa: E402
from domino_sglang.bench.systems import (SYSTEMS, TINY, ServerOpts, mem_fraction_for,  # noqa: E402
                                         resolve_pair, server_memory, system_flags)

FIRST_ITEM_S = 45.0  # budget guess for one (system, batch size) before any was timed


say = progress_printer("profile_round")


_ints = int_list_type("batch sizes", "1,16,64", unique_sorted=True)


def build_parser() -> argparse.ArgumentParser:
    p, a = pair_script_parser(__doc__)
    a("--systems", nargs="+", default=["dflash", "domino"], choices=list(SYSTEMS),
      help="profiled in this order at each batch size; the first is the base of the diff "
      "(default: dflash domino)")
    a("--batch-sizes", type=_ints, default=[1, 16, 64], help="running requests (1,16,64)")
    a("--steps", type=int, default=30, help="rounds per profile (SGLang num_steps; 30)")
    a("--max-new-tokens", type=int, default=2048,
      help="per request, capped at the context length minus the prompt and a margin (2048)")
    a("--warmup-tokens", type=int, default=32,
      help="one warm-up request per slot of this many tokens before each load (0: none)")
    a("--settle-s", type=float, default=1.0,
      help="seconds between b requests running and the profile start (1.0)")
    a("--prompts", type=Path, default=TINY / "heldout_prompts.jsonl",
      help="jsonl with input_ids (or text, tokenized with the target's tokenizer)")
    a("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    a("--with-stack", action="store_true",
      help="record Python stacks (python_function events; slows the host side down)")
    a("--record-shapes", action="store_true", help="record op input shapes")
    add_memory_plan_args(
        a, fraction_help="default: from the memory plan (both servers' needs / GPU memory + "
        "0.05, >= 0.3)", kv_help="KV cap per server (default: largest batch x (longest prompt + "
        "tokens + 2 x block) x 1.1)", budget_s=420.0, budget_help="whole run from start (420); "
        "a (system, batch) that would overrun is skipped", reserve_s=25.0,
        startup_timeout_s=240.0)
    a("--ramp-timeout-s", type=float, default=60.0,
      help="wait for b running requests at most this long (60)")
    a("--trace-timeout-s", type=float, default=90.0,
      help="wait for the trace file at most this long, then /stop_profile (90)")
    a("--request-timeout-s", type=float, default=900.0)
    a("--keep-traces", action="store_true", help="keep the raw .trace.json.gz files")
    add_server_run_args(a, out_name="profile_round", base_port=31400)
    return p


def parse(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = parse_recording_argv(p, argv, __file__)
    for name in ("steps", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.steps < 3:
        p.error(f"--steps {args.steps}: at least 3 (rounds are measured between run_batch starts)")
    if len(set(args.systems)) != len(args.systems):
        p.error(f"--systems {args.systems}: each system once")
    if args.warmup_tokens < 0 or args.settle_s < 0:
        p.error("--warmup-tokens and --settle-s must be >= 0")
    if args.gpu_mem_gb is None:
        g = gpu_info()
        args.gpu_mem_gb = (g["gpus"][0]["memory_total_mib"] * 2**20 / 1e9
                           if g.get("available") else 80.0)
    return args


# ---- plan ------------------------------------------------------------------------------------
def _launcher_cmd(launcher: list[str] | None, port: int, flags: list[str]) -> list[str]:
    if not launcher:
        return sglang_command(port, flags)
    return [*launcher, "--host", "127.0.0.1", "--port", str(port), *flags]


def _shown(server: dict, launcher) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in server["env"].items())
    return f"{env} {shlex.join(_launcher_cmd(launcher, server['port'], server['flags']))}".strip()


def make_plan(args, launcher=None) -> dict:
    """Everything decided before a server starts (what ``--dry-run`` prints)."""
    pair = resolve_pair(args.pair)
    prompts = load_prompt_ids(args.prompts, pair.target if pair.exists else None)
    width = pair.block_size or 16
    ctx = pair.target_config.get("max_position_embeddings")
    margin = 2 * width + 16  # SGLang's reserved tokens and the verify overshoot
    floor = min(args.max_new_tokens, 256)
    if ctx:
        prompts = [p for p in prompts if len(p) + margin + floor <= ctx]
        if not prompts:
            raise ValueError(f"--prompts {args.prompts}: no prompt leaves {floor} new tokens "
                             f"within the context length {ctx}")
    caps = [min(args.max_new_tokens, ctx - len(p) - margin) if ctx else args.max_new_tokens
            for p in prompts]
    bmax = max(args.batch_sizes)
    opts = ServerOpts(dtype=args.dtype, max_running_requests=bmax,
                      cuda_graph_bs=tuple(sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128)
                                                  if b <= bmax} | set(args.batch_sizes))),
                      seed=args.seed, extra_args=shlex.split(args.extra_server_args))
    longest = max(len(p) + c for p, c in zip(prompts, caps))
    need_tokens = bmax * (longest + 2 * width) * 1.1
    opts.max_total_tokens = args.max_total_tokens or int(-(-need_tokens // 4096) * 4096)
    need = ({s: server_memory(s, pair, opts) for s in args.systems} if pair.exists else {})
    total = round(sum(v["total_gb"] for v in need.values()), 2) if need else None
    frac = args.mem_fraction_static or (mem_fraction_for(total, args.gpu_mem_gb)
                                        if total else 0.3)
    if frac is None:
        raise ValueError(f"servers {args.systems} need {total} GB together: over the "
                         f"--gpu-mem-gb {args.gpu_mem_gb:.0f} budget (lower --max-new-tokens "
                         "or pass fewer --systems)")
    servers = []
    for i, s in enumerate(args.systems):
        flags, env = system_flags(s, pair, opts, frac)
        servers.append({"name": s, "port": args.base_port + i, "flags": flags, "env": env})
    for s in servers:
        s["command"] = _shown(s, launcher)
    body = {"output_dir": "<out-dir>/traces_<stamp>", "num_steps": args.steps,
            "activities": ["CPU", "GPU"], "with_stack": bool(args.with_stack),
            "record_shapes": bool(args.record_shapes),
            "profile_id": "<system>_b<batch>_<stamp>"}
    return {"pair": {"name": pair.name, "root": str(pair.root), "block_size": pair.block_size,
                     "built": pair.exists, "context_length": ctx},
            "prompts": {"path": str(args.prompts), "usable": len(prompts),
                        "max_new_tokens": {"min": min(caps), "max": max(caps)}},
            "systems": args.systems, "batch_sizes": args.batch_sizes, "steps": args.steps,
            "order": [[b, s] for b in args.batch_sizes for s in args.systems],
            "dtype": args.dtype, "mem_fraction_static": frac, "server_memory_gb": need,
            "max_total_tokens": opts.max_total_tokens, "gpu_mem_gb": args.gpu_mem_gb,
            "profile_request": body, "time_budget_s": args.time_budget_s,
            "servers": servers, "_prompts": prompts, "_caps": caps}


# ---- one (system, batch size) ----------------------------------------------------------------
def _loads(url: str) -> dict:
    body = http_json(url + "/v1/loads", timeout=10)
    out = load_summary(body)
    items = body.get("loads") if isinstance(body, dict) else None
    if items and isinstance(items[0], dict) and items[0].get("speculative"):
        out["speculative"] = items[0]["speculative"]
    return out


def _abort_all(url: str) -> None:
    try:
        http_json(url + "/abort_request", {"abort_all": True}, timeout=10)
    except (OSError, urllib.error.URLError) as exc:
        say(f"abort_request on {url}: {exc}")


def _find_trace(folder: Path, profile_id: str) -> Path | None:
    files = sorted(Path(folder).glob(f"{profile_id}*.trace.json*"))
    return files[0] if files else None


async def _wait_trace(folder: Path, profile_id: str, timeout_s: float) -> Path | None:
    """The trace file once it is complete (size steady and a whole gzip stream)."""
    t0, last = time.time(), -1
    while time.time() - t0 < timeout_s:
        path = _find_trace(folder, profile_id)
        if path is not None:
            size = path.stat().st_size
            if size == last and size > 0 and (not path.name.endswith(".gz") or
                                              await asyncio.to_thread(tr.gzip_complete, path)):
                return path
            last = size
        await asyncio.sleep(0.5)
    return None


async def _drive(url: str, b: int, requests: list[dict], warm: list[dict], body: dict,
                 trace_dir: Path, args) -> dict:
    """Warm up, hold b requests running, profile, stop; timings and loads (no analysis)."""
    info: dict = {}
    counts = {"completed": 0, "aborted": 0, "failed": 0, "errors": []}
    async with Client(url, args.request_timeout_s) as c:
        if warm:
            t = time.time()
            run = await closed_loop(c, warm, b)
            info["warmup"] = {"requests": len(warm), "ok": sum(r.ok for r in run.results),
                              "wall_s": round(time.time() - t, 2)}
        stop = asyncio.Event()

        async def worker(k: int):
            i = 0
            while not stop.is_set():
                rq = requests[(k + i * b) % len(requests)]
                i += 1
                r = await c.generate(rq["input_ids"], rq["sampling_params"])
                key = "completed" if r.ok else ("aborted" if r.aborted else "failed")
                counts[key] += 1
                if not r.ok and not r.aborted and len(counts["errors"]) < 3:
                    counts["errors"].append(r.error[:200])

        tasks = [asyncio.create_task(worker(k)) for k in range(b)]
        try:
            t = time.time()
            loads = {}
            while time.time() - t < args.ramp_timeout_s:
                loads = await asyncio.to_thread(_loads, url)
                if (loads.get("num_running_reqs") or 0) >= b and not loads.get("num_waiting_reqs"):
                    break
                if counts["failed"]:
                    raise RuntimeError(f"requests failed during the ramp: {counts['errors']}")
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"{b} requests not running after {args.ramp_timeout_s:g} s "
                                   f"(/v1/loads: {loads})")
            info["ramp_s"] = round(time.time() - t, 2)
            info["loads_before"] = loads
            await asyncio.sleep(args.settle_s)
            t = time.time()
            info["start_profile"] = str(await asyncio.to_thread(
                http_json, url + "/start_profile", body, 60)).strip()
            path = await _wait_trace(trace_dir, body["profile_id"], args.trace_timeout_s)
            if path is None:  # fewer rounds than asked (load fell away?): flush what there is
                info["stop_profile"] = str(await asyncio.to_thread(
                    http_json, url + "/stop_profile", {}, 60)).strip()
                path = await _wait_trace(trace_dir, body["profile_id"], 60)
            info["profile_wall_s"] = round(time.time() - t, 2)
            info["trace_path"] = str(path) if path else None
            info["loads_after"] = await asyncio.to_thread(_loads, url)
        finally:
            stop.set()
            t = time.time()
            while time.time() - t < 30:
                await asyncio.to_thread(_abort_all, url)
                await asyncio.sleep(0.5)
                try:
                    left = await asyncio.to_thread(_loads, url)
                except (OSError, urllib.error.URLError, ValueError):
                    continue
                if not left.get("num_running_reqs") and not left.get("num_waiting_reqs"):
                    break
            _, pending = await asyncio.wait(tasks, timeout=30)
            for p in pending:
                p.cancel()
            info["drain_s"] = round(time.time() - t, 2)
            info["requests"] = counts
    return info


def profile_one(srv: Server, system: str, b: int, plan: dict, args, trace_dir: Path,
                stamp: str, ours: dict) -> dict:
    prompts, caps = plan["_prompts"], plan["_caps"]
    reqs = [{"input_ids": p, "sampling_params": {"max_new_tokens": cap, "temperature": 0.0,
                                                 "ignore_eos": True}}
            for p, cap in zip(prompts, caps)]
    warm = [{"input_ids": prompts[i % len(prompts)],
             "sampling_params": {"max_new_tokens": args.warmup_tokens, "temperature": 0.0,
                                 "ignore_eos": True}}
            for i in range(b)] if args.warmup_tokens else []
    body = {**plan["profile_request"], "output_dir": str(trace_dir),
            "profile_id": f"{system}_b{b}_{stamp}"}
    info = asyncio.run(_drive(srv.url, b, reqs, warm, body, trace_dir, args))
    path = info.get("trace_path")
    if not path:
        raise RuntimeError(f"no complete trace {body['profile_id']}* in {trace_dir} "
                           f"(server log: {srv.log_path.name}); run: {info}")
    t = time.time()
    trace = tr.load_trace(Path(path))
    n_events = len(trace["traceEvents"])
    res = tr.analyze(trace, batch_size=b, ours=ours)
    del trace
    res["profile"] = {**info, "request": body, "analysis_s": round(time.time() - t, 2),
                      "trace": {"file": Path(path).name, "bytes": Path(path).stat().st_size,
                                "events": n_events, "kept": bool(args.keep_traces)}}
    if not args.keep_traces:
        Path(path).unlink()
    return res


# ---- report ----------------------------------------------------------------------------------
def render_markdown(data: dict) -> str:
    meta, plan = data["meta"], data.get("plan", {})
    git = meta.get("git", {})
    lines = ["# Per-round profile: where a speculative round's time goes", "",
             f"- date: {meta.get('date')}; GPU: {(meta.get('gpu') or {}).get('name')}; "
             f"commit {git.get('commit')} (dirty: {git.get('dirty')})",
             f"- versions: {json.dumps(meta.get('versions'))}",
             f"- command: `{meta.get('command')}`",
             f"- pair {plan.get('pair', {}).get('name')} ({plan.get('dtype')}), systems "
             f"{plan.get('systems')}, batch sizes {plan.get('batch_sizes')}, "
             f"{plan.get('steps')} profiled rounds each, mem fraction "
             f"{plan.get('mem_fraction_static')}, wall {meta.get('wall_s')} s", "",
             "Method: SGLang's torch profiler (`/start_profile`, CPU + GPU, no stacks) while "
             "exactly b requests run; a round = one `scheduler.run_batch` start to the next, "
             "rounds with a prefill or another batch size left out. GPU busy = union of "
             "kernel/copy intervals; GPU idle = wall - busy (host time not hidden). Times in "
             "ms per round, counts per round. The profiler itself adds host time to every "
             "CPU op: compare systems with each other, not with unprofiled rounds.", ""]
    results = data.get("results") or {}
    if results:
        systems = plan.get("systems") or list(results)
        base, other = (systems + [None])[:2]
        lines += tr.markdown(results, data.get("diff") or {}, base=base, other=other or base)
    if data.get("skipped"):
        lines += ["", "## Skipped (time budget)", ""]
        lines += [f"- {s['system']} at batch {s['batch_size']}: {s['reason']}"
                  for s in data["skipped"]]
    if data.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in data["errors"].items()]
    return "\n".join(lines) + "\n"


# ---- the run ---------------------------------------------------------------------------------
def run(args, launcher=None) -> dict:
    t0 = time.time()
    plan = make_plan(args, launcher)
    ours = tr.triton_kernel_names(ROOT / "kernels")
    out_dir = Path(args.out_dir)
    with Run(out_dir, "profile_round", args.argv, commit=args.commit,
             render=render_markdown) as hr:
        hr.data["plan"] = {k: v for k, v in plan.items() if not k.startswith("_")}
        hr.data["our_kernels"] = ours
        results = hr.data.setdefault("results", {s: {} for s in args.systems})
        hr.data["diff"], hr.data["skipped"], hr.data["servers"] = {}, [], {}
        if not plan["pair"]["built"]:
            raise FileNotFoundError(f"--pair {args.pair}: no target/ + drafter-domino/ + "
                                    "drafter-dflash/ there")
        stamp = hr.stem[len("profile_round_"):]
        trace_dir = (out_dir / f"traces_{stamp}").resolve()  # the servers write here
        trace_dir.mkdir(parents=True, exist_ok=True)
        live: dict[str, Server] = {}
        try:
            with hr.phase("start", fatal=True):
                objs = {s["name"]: Server(s["name"], s["port"],
                                          _launcher_cmd(launcher, s["port"], s["flags"]),
                                          out_dir / f"{hr.stem}_server_{s['name']}.log",
                                          env=dict(os.environ, **s["env"]))
                        for s in plan["servers"]}
                say(f"starting {list(objs)}")
                ready = start_all(objs, args.startup_timeout_s)
                for n, ok in ready.items():
                    hr.data["servers"][n] = {"ready": ok, "ready_s": objs[n].ready_s,
                                             "log": objs[n].log_path.name}
                    if ok:
                        live[n] = objs[n]
                    else:
                        hr.data["servers"][n]["log_tail"] = objs[n].log_tail(25)[-3000:]
                        objs[n].stop()
                say(f"ready: {json.dumps({n: objs[n].ready_s for n in objs})}")
                if not live:
                    raise RuntimeError("no server came up (see servers.*.log_tail)")
            took: list[float] = []
            for b in args.batch_sizes:
                for s in args.systems:
                    if s not in live:
                        results[s][str(b)] = {"error": "server not running"}
                        continue
                    left = t0 + args.time_budget_s - args.reserve_s - time.time()
                    need = max(took) * 1.25 if took else FIRST_ITEM_S
                    if left < need:
                        hr.data["skipped"].append({"system": s, "batch_size": b, "reason":
                                                   f"{left:.0f} s left, ~{need:.0f} s needed"})
                        continue
                    say(f"{s} at batch {b}")
                    t = time.time()
                    with hr.phase(f"{s}_b{b}"):
                        try:
                            results[s][str(b)] = profile_one(live[s], s, b, plan, args,
                                                             trace_dir, stamp, ours)
                        except BaseException as exc:  # SIGTERM included: say where it stopped
                            results[s][str(b)] = {"error": f"{type(exc).__name__}: {exc}"}
                            raise
                    took.append(time.time() - t)
                    r = results[s][str(b)]
                    if "gpu" in r:
                        say(f"{s} b={b}: {r['gpu']['wall_ms']:.3f} ms/round, GPU busy "
                            f"{r['gpu']['busy_ms']:.3f}, idle {r['gpu']['idle_ms']:.3f} "
                            f"({r['rounds']['measured']} rounds, {took[-1]:.0f} s)")
                if len(args.systems) >= 2:
                    base, other = args.systems[0], args.systems[1]
                    if str(b) in results[base] and str(b) in results[other]:
                        hr.data["diff"][str(b)] = tr.compare(results[base][str(b)],
                                                             results[other][str(b)])
        finally:
            for n, srv in live.items():
                hr.data["servers"][n]["memory_log"] = log_memory_lines(srv.log_path)
                srv.stop()
            if not args.keep_traces:
                shutil.rmtree(trace_dir, ignore_errors=True)
    say(f"wrote {', '.join(str(p) for p in hr.paths)}")
    return hr.data


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse(argv)
    launcher = shlex.split(args.launcher) if args.launcher else None
    if args.dry_run:
        plan = make_plan(args, launcher)
        print(json.dumps({k: v for k, v in plan.items()
                          if k != "servers" and not k.startswith("_")}, indent=1, default=str))
        print("\n# servers (started in parallel on one GPU)")
        for s in plan["servers"]:
            print(s["command"])
        print("\n# profile requests, in this order")
        for b, s in plan["order"]:
            body = {**plan["profile_request"], "profile_id": f"{s}_b{b}_<stamp>"}
            print(f"POST :{next(x['port'] for x in plan['servers'] if x['name'] == s)}"
                  f"/start_profile {json.dumps(body)}  # while {b} requests run")
        return 0
    data = run(args, launcher)
    ok = all("gpu" in r for sys_res in data.get("results", {}).values()
             for r in sys_res.values()) and not data.get("errors")
    return 0 if ok and data.get("results") else 1


if __name__ == "__main__":
    sys.exit(main())
