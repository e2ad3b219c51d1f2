"""Side-by-side serving comparison on one GPU: plain AR, NGRAM, DFlash, Domino (chain, tree).

One call on the H200 (about 7-9 min; server start-up ~140-180 s in parallel)::

    python3 benchmarks/compare.py --out-dir $OUT/compare

It starts one SGLang 0.5.17 server per system on the same trained small target
(``assets/domino-tiny/target``, ``--dtype bfloat16``, distinct ports, small
``--mem-fraction-static`` + ``--max-total-tokens`` each), waits for ``/health`` in parallel, then
runs the same closed-loop sweep against each, one system at a time (the servers share the GPU):
``domino_sglang.bench.load`` (``domino-load``: chat API, streaming, greedy) with the held-out
prompts of the target (``heldout_prompts.jsonl``, text; the servers load the target's tokenizer
and ChatML template, so the chat API applies the same template the models were trained with).

Systems (``--systems``):

============  =================================================================================
ar            plain autoregressive decoding (no speculation)
ngram         ``--speculative-algorithm NGRAM`` (SGLang's n-gram lookup, its default 12 tokens)
dflash        plain DFlash drafting, **our worker**: ``--speculative-algorithm domino`` with the
              head-off ``drafter-dflash`` (same backbone as Domino, no head). Our worker honours
              ``shift_label: true``, so this is the fair DFlash baseline ("vs DFLASH" ratios)
dflash_stock  SGLang's built-in ``--speculative-algorithm DFLASH`` on the same ``drafter-dflash``.
              It reads proposal i from block position i+1 and so misreads this ``shift_label``
              checkpoint: a control of the runtime, not a fair drafter baseline
domino        ``--speculative-algorithm domino`` with ``drafter-domino`` (chain mode)
domino_tree   EXPERIMENTAL tree mode of our worker: ``drafter-domino``, server environment
              ``DOMINO_TREE_TOPK=--tree-topk`` (4) and ``DOMINO_TREE_BUDGET=--tree-budget`` (32),
              no ``--speculative-num-draft-tokens`` (the plugin sets the verify width to the
              node budget), ``--grammar-backend none``. A server that fails to start is a
              "failed to start" row (with its log tail); the other systems still run
============  =================================================================================

Per level: output tokens/s, ratios vs AR and vs DFlash, TPOT/TTFT p50, the server's accept length
(``/server_info``: cumulative since the server started) and, once per system after the sweep, a
clean tau probe (``/generate`` with ``input_ids``: completion tokens / verify steps). Levels
1 2 4 8 16 run for every system first; ``--extra-levels`` (32 64) then run for every system if
the time budget allows. Outputs under ``--out-dir``: ``compare.json``, ``compare.md``,
``load/<system>.{json,csv}``, ``load/throughput_latency.png``, ``server_<system>.log``.
``--dry-run`` prints the server commands (with their environment) and the plan and starts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from domino_sglang.bench import load as loadgen  # noqa: E402
from domino_sglang.bench.client import http_json  # noqa: E402
from domino_sglang.bench.harness import (Run, environment_fields,  # noqa: E402
                                         parse_recording_argv, provenance_lines)
from domino_sglang.bench.servers import (Server, server_flags, sglang_command,  # noqa: E402
                                         start_all, wait_for_gate)

ASSETS = ROOT / "assets" / "domino-tiny"

SYSTEMS = {
    "ar": {"label": "AR (plain decoding)", "spec": None},
    "ngram": {"label": "NGRAM (SGLang n-gram)", "spec": "NGRAM"},
    "dflash": {"label": "dflash (same backbone, our worker)", "spec": "domino",
               "draft": "drafter-dflash"},
    "dflash_stock": {"label": "dflash-stock (SGLang DFLASH; misreads shift_label)",
                     "spec": "DFLASH", "draft": "drafter-dflash"},
    "domino": {"label": "domino chain (our worker)", "spec": "domino", "draft": "drafter-domino"},
    "domino_tree": {"label": "domino tree (our worker, EXPERIMENTAL; DOMINO_TREE_TOPK/BUDGET)",
                    "spec": "domino", "draft": "drafter-domino", "tree": True},
}
DEFAULT_ORDER = ["ar", "domino", "domino_tree", "dflash", "dflash_stock", "ngram"]  # sweep order
TABLE_ORDER = ["ar", "ngram", "dflash_stock", "dflash", "domino", "domino_tree"]


# ---- server commands ------------------------------------------------------------------------
def common_server_args(args) -> list[str]:
    return server_flags(args.target, args.dtype, args.mem_fraction, args.max_total_tokens,
                        args.seed, ["--max-running-requests", str(args.max_running_requests),
                                    *shlex.split(args.extra_server_args)],
                        cuda_graph_bs=args.cuda_graph_bs)


def server_command(name: str, port: int, args) -> list[str]:
    sysdef = SYSTEMS[name]
    cmd = sglang_command(port, common_server_args(args))
    if sysdef["spec"]:
        cmd += ["--speculative-algorithm", sysdef["spec"]]
    if sysdef.get("draft"):
        cmd += ["--speculative-draft-model-path", str(Path(args.assets) / sysdef["draft"])]
    if sysdef.get("tree"):  # the plugin sets the verify width N itself; refuses a different one
        cmd += ["--grammar-backend", "none"]
    elif sysdef.get("draft"):
        cmd += ["--speculative-num-draft-tokens", str(args.block_size)]
    return cmd


def server_env(name: str, args) -> dict[str, str]:
    """Extra environment of the server process (tree mode is chosen there, not by a flag)."""
    if not SYSTEMS[name].get("tree"):
        return {}
    return {"DOMINO_TREE_TOPK": str(args.tree_topk), "DOMINO_TREE_BUDGET": str(args.tree_budget)}


def shown_command(name: str, port: int, args) -> str:
    env = server_env(name, args)
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()]
                    + [shlex.join(server_command(name, port, args))])


# ---- load sweep (domino_sglang.bench.load, programmatically) --------------------------------
def load_namespace(args, base_url: str, label: str, level: int) -> argparse.Namespace:
    argv = ["--base-url", base_url, "--label", label, "--api", "chat",
            "--prompts", str(args.prompts), "--num-prompts", str(args.num_prompts),
            "--max-tokens", str(args.max_tokens), "--temperature", "0",
            "--concurrency", str(level),
            "--requests-per-level", str(requests_for_level(level, args)),
            "--duration-s", str(args.level_duration_s),
            "--request-timeout-s", str(args.request_timeout_s),
            "--warmup", str(args.warmup), "--seed", str(args.seed),
            "--out", str(Path(args.out_dir) / "load"), "--no-progress"]
    if args.ignore_eos:
        argv.append("--ignore-eos")
    return loadgen.build_parser().parse_args(argv)


def requests_for_level(level: int, args) -> int:
    return max(args.min_requests, args.requests_per_slot * level)


def tau_probe(url: str, prompts: list[list[int]], max_new_tokens: int,
              concurrency: int = 8) -> dict:
    """Greedy ``/generate`` with input_ids; tau = completion tokens / verify steps (pooled)."""
    def one(ids):
        out = http_json(url + "/generate", {"input_ids": ids, "sampling_params": {
            "max_new_tokens": max_new_tokens, "temperature": 0.0}}, timeout=120)
        meta = out.get("meta_info", {})
        return int(meta.get("completion_tokens") or 0), meta.get("spec_verify_ct")

    with ThreadPoolExecutor(concurrency) as pool:
        outs = list(pool.map(one, prompts))
    tokens = sum(t for t, _ in outs)
    steps = [v for _, v in outs if v is not None]
    return {"prompts": len(prompts), "completion_tokens": tokens,
            "verify_steps": sum(steps) if steps else None,
            "tau": tau_from(tokens, sum(steps)) if steps else None}


def tau_from(tokens: int, steps: int) -> float | None:
    return round(tokens / steps, 4) if steps else None


def heldout_input_ids(path: Path, n: int) -> list[list[int]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["input_ids"] for r in rows if "input_ids" in r][:n]


def sweep_levels(server: Server, levels: list[int], args, deadline: float) -> tuple[list, list]:
    """Run the levels one by one (each a load.run call); stop when the deadline is near."""
    done, skipped = [], []
    for level in levels:
        need = args.level_duration_s + args.level_slack_s
        if time.time() + need > deadline:
            skipped.append(level)
            continue
        ns = load_namespace(args, server.url, server.name, level)
        res = asyncio.run(loadgen.run(ns))
        done.extend(res["levels"])
        print(f"  {server.name} c={level}: {res['levels'][0]['output_tokens_per_s']:.1f} tok/s "
              f"({res['levels'][0]['completed']} ok, {res['levels'][0]['errors']} err)",
              flush=True)
    return done, skipped


# ---- table math (pure; tested on CPU with fake levels) --------------------------------------
def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def build_table(level_results: dict[str, list[dict]], baseline_ar: str = "ar",
                baseline_dflash: str = "dflash", failed: dict | None = None,
                taus: dict | None = None) -> list[dict]:
    """Rows (level, system) with throughput, ratios vs AR and vs DFlash, TPOT/TTFT p50, accept.

    ``level_results[system]`` is a list of load.LevelResult dicts (``asdict``); ``failed``:
    system -> note for servers that did not start (a "failed to start" row per level)."""
    failed = failed or {}
    by = {s: {lv["level"]: lv for lv in lvs} for s, lvs in level_results.items()}
    levels = sorted({lv for s in by.values() for lv in s})
    order = sorted(set(level_results) | set(failed), key=lambda s: (
        TABLE_ORDER.index(s) if s in TABLE_ORDER else len(TABLE_ORDER), s))
    rows = []
    for level in levels:
        ar = by.get(baseline_ar, {}).get(level)
        df = by.get(baseline_dflash, {}).get(level)
        ar_tps = ar["output_tokens_per_s"] if ar and ar["completed"] else None
        df_tps = df["output_tokens_per_s"] if df and df["completed"] else None
        for system in order:
            if system in failed:
                rows.append({"level": level, "system": system, "status": "failed to start",
                             "note": failed[system]})
                continue
            lv = by.get(system, {}).get(level)
            if lv is None:
                rows.append({"level": level, "system": system, "status": "not run"})
                continue
            tps = lv["output_tokens_per_s"] if lv["completed"] else None
            rows.append({
                "level": level, "system": system,
                "status": "ok" if lv["completed"] and not lv["errors"]
                else ("errors" if lv["completed"] else "failed"),
                "completed": lv["completed"], "errors": lv["errors"],
                "output_tokens_per_s": None if tps is None else round(tps, 2),
                "x_vs_ar": _ratio(tps, ar_tps), "x_vs_dflash": _ratio(tps, df_tps),
                "tpot_p50_ms": _round(lv["tpot_ms"].get("p50")),
                "ttft_p50_ms": _round(lv["ttft_ms"].get("p50")),
                "latency_p50_ms": _round(lv["latency_ms"].get("p50")),
                "accept_length_server": _round(lv.get("accept_length")),
                "tau_probe": (taus or {}).get(system),
            })
    return rows


def _round(v, nd=2):
    return None if v is None else round(float(v), nd)


def _fmt(v, spec=".1f", suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


def markdown(meta: dict, rows: list[dict], labels: dict) -> str:
    out = [f"# Serving comparison: {meta.get('date')}", "",
           *provenance_lines(meta), f"- device: {meta.get('device')}",
           f"- target: `{meta.get('target')}`, dtype {meta.get('dtype')}, block "
           f"{meta.get('block_size')} (domino_tree: {json.dumps(meta.get('tree'))}); chat API, "
           f"greedy, max_tokens {meta.get('max_tokens')}, "
           f"ignore_eos {meta.get('ignore_eos')}, prompts `{meta.get('prompts')}`",
           f"- server start-up (s): {json.dumps(meta.get('ready_s'))}", "",
           "Systems:", ""]
    for s, lab in labels.items():
        out.append(f"- `{s}`: {lab}")
    out += ["", "`x AR` / `x DFlash`: output tokens/s over AR's / over `dflash`'s (same "
            "backbone, our worker) at the same concurrency. `accept (server)`: "
            "`/server_info` avg_spec_accept_length after the level (cumulative since start); "
            "`tau probe`: completion tokens / verify steps on held-out prompts (`/generate`, "
            "greedy, after the sweep).", "",
            "| conc. | system | tok/s | x AR | x DFlash | TPOT p50 ms | TTFT p50 ms | "
            "accept (server) | tau probe | ok / err |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if r["status"] in ("failed to start", "not run"):
            note = f": {r['note']}" if r.get("note") else ""
            out.append(f"| {r['level']:g} | {r['system']} | {r['status']}{note} | | | | | | | |")
            continue
        out.append(
            f"| {r['level']:g} | {r['system']} | {_fmt(r['output_tokens_per_s'])} | "
            f"{_fmt(r['x_vs_ar'], '.2f', 'x')} | {_fmt(r['x_vs_dflash'], '.2f', 'x')} | "
            f"{_fmt(r['tpot_p50_ms'], '.2f')} | {_fmt(r['ttft_p50_ms'])} | "
            f"{_fmt(r['accept_length_server'], '.2f')} | {_fmt(r['tau_probe'], '.2f')} | "
            f"{r['completed']} / {r['errors']} |")
    if meta.get("errors"):
        out += ["", "Errors:", ""]
        for k, v in meta["errors"].items():
            out.append(f"- `{k}`:\n\n```\n{v.rstrip()}\n```" if "\n" in str(v)
                       else f"- `{k}`: {v}")
    if meta.get("skipped_levels"):
        out += ["", f"Levels skipped for the time budget: {json.dumps(meta['skipped_levels'])}"]
    out += ["", "Plot: `load/throughput_latency.png` (tok/s, TPOT p50, TTFT p50 vs concurrency)."]
    return "\n".join(out) + "\n"


# ---- main -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--target", type=Path, default=ASSETS / "target")
    a("--assets", type=Path, default=ASSETS, help="folder with drafter-domino, drafter-dflash")
    a("--prompts", default=str(ASSETS / "heldout_prompts.jsonl"),
      help="load prompts (domino-load source; default: the held-out prompts, text)")
    a("--systems", nargs="+", default=DEFAULT_ORDER, choices=list(SYSTEMS),
      help="systems, in sweep order (default: %(default)s)")
    a("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    a("--extra-levels", type=int, nargs="*", default=[32, 64],
      help="run after every system has done --levels, if time is left")
    a("--block-size", type=int, default=16)
    a("--tree-topk", type=int, default=4, help="domino_tree: DOMINO_TREE_TOPK (2-8)")
    a("--tree-budget", type=int, default=32,
      help="domino_tree: DOMINO_TREE_BUDGET, the node budget N (block size <= N <= 64)")
    a("--dtype", default="bfloat16")
    a("--max-tokens", type=int, default=128)
    a("--ignore-eos", action="store_true")
    a("--num-prompts", type=int, default=237)
    a("--min-requests", type=int, default=16, help="requests per level at least")
    a("--requests-per-slot", type=int, default=4,
      help="requests per level = max(min, this x concurrency)")
    a("--level-duration-s", type=float, default=20.0, help="no new request after this")
    a("--level-slack-s", type=float, default=10.0,
      help="budgeted on top of the duration per level (drain + warm-up)")
    a("--request-timeout-s", type=float, default=60.0)
    a("--warmup", type=int, default=2)
    a("--tau-probe-prompts", type=int, default=32)
    a("--cuda-graph-bs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    a("--mem-fraction", type=float, default=0.15)
    a("--max-total-tokens", type=int, default=131072)
    a("--max-running-requests", type=int, default=128)
    a("--base-port", type=int, default=31100)
    a("--startup-timeout", type=float, default=260.0)
    a("--start-gate", type=Path, default=None,
      help="after the servers are healthy, wait until this file exists before measuring")
    a("--gate-timeout-s", type=float, default=600.0,
      help="longest wait for --start-gate; then measure anyway (recorded)")
    a("--budget-s", type=float, default=500.0,
      help="whole-run budget (start-up included): levels that would overrun are skipped")
    a("--seed", type=int, default=0)
    a("--extra-server-args", default="", help="appended to every server command")
    a("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "compare")
    a("--commit", default=None, help="the commit that ran (else $DOMINO_COMMIT, else git)")
    a("--dry-run", action="store_true", help="print the server commands and the plan; exit")
    return p


def plan(args) -> dict:
    servers = {name: {"port": args.base_port + i,
                      "command": shown_command(name, args.base_port + i, args),
                      "env": server_env(name, args), "label": SYSTEMS[name]["label"]}
               for i, name in enumerate(args.systems)}
    return {"servers": servers,
            "levels": args.levels, "extra_levels": args.extra_levels,
            "requests_per_level": {lv: requests_for_level(lv, args)
                                   for lv in args.levels + list(args.extra_levels)}}


def main(argv=None) -> int:
    args = parse_recording_argv(build_parser(), argv, __file__)
    deadline = time.time() + args.budget_s
    if args.dry_run:
        print(json.dumps(plan(args), indent=1))
        return 0
    try:  # the load generator needs aiohttp: fail before any server starts
        import aiohttp  # noqa: F401
    except ImportError:
        print("benchmarks/compare.py needs aiohttp (pip install aiohttp)", file=sys.stderr)
        return 2
    # SIGTERM (an outer `timeout`) -> Terminated, caught in _sweep_all: the table is written
    with Run(Path(args.out_dir), "compare", args.argv, args.commit, stem="compare",
             render=lambda d: markdown(d["meta"], d["rows"], d["labels"])) as run:
        out_dir = run.out_dir
        servers = {name: Server(name, args.base_port + i,
                                server_command(name, args.base_port + i, args),
                                out_dir / f"server_{name}.log",
                                env=dict(os.environ, **server_env(name, args)))
                   for i, name in enumerate(args.systems)}
        labels = {n: SYSTEMS[n]["label"] for n in servers}
        run.data.update(rows=[], labels=labels)
        meta = run.data["meta"]
        meta.update({**environment_fields(meta),
                     "target": str(args.target), "dtype": args.dtype,
                     "block_size": args.block_size, "tree": server_env("domino_tree", args),
                     "max_tokens": args.max_tokens, "ignore_eos": args.ignore_eos,
                     "prompts": str(args.prompts),
                     "args": {k: str(v) for k, v in vars(args).items()},
                     "servers": {n: shown_command(n, s.port, args) for n, s in servers.items()},
                     "errors": {}, "skipped_levels": {}})
        results, taus, failed = _sweep_all(servers, args, meta, deadline)
        for n, lvs in results.items():
            if lvs:
                lvs.sort(key=lambda lv: lv["level"])
                try:  # LABEL.json/csv first, then the plot (needs matplotlib)
                    loadgen.write_outputs({"label": n, "base_url": servers[n].url, "levels": lvs,
                                           "system": SYSTEMS[n]["label"], **{k: meta[k] for k in (
                                               "date", "device", "versions", "command")}},
                                          out_dir / "load")
                except Exception as exc:  # noqa: BLE001 - the table below still gets written
                    meta["errors"]["plot"] = f"{type(exc).__name__}: {exc}"
        run.data["rows"] = build_table(results, failed=failed, taus=taus)
    print(run.paths[1].read_text())
    return 0 if results.get("ar") and results.get("domino") else 1


def _sweep_all(servers: dict, args, meta: dict, deadline: float) -> tuple[dict, dict, dict]:
    """Start the servers, sweep the live ones (``--levels``, tau probe, then
    ``--extra-levels``); -> (level results, taus, failed). Errors (SIGTERM included) go to
    ``meta["errors"]``; the servers are stopped."""
    results: dict[str, list[dict]] = {n: [] for n in servers}
    taus: dict[str, float | None] = {}
    tau_detail: dict[str, dict] = {}
    failed: dict[str, str] = {}  # system -> last log line, for servers that did not start
    meta["tau_probe"] = tau_detail
    try:
        ready = start_all(servers, args.startup_timeout)
        meta["ready_s"] = {n: s.ready_s for n, s in servers.items()}
        print("ready:", json.dumps(meta["ready_s"]), flush=True)
        for n, ok in ready.items():
            if not ok:
                tail = servers[n].log_tail(15)[-1500:]
                meta["errors"][f"{n}_startup"] = tail
                last = [x for x in tail.splitlines() if x.strip()][-1:] or ["(empty log)"]
                failed[n] = (f"see `{n}_startup` below / server_{n}.log; last line: "
                             + last[0].strip().replace("|", "\\|")[-200:])
                servers[n].stop()
        live = [n for n in servers if ready[n]]
        if args.start_gate:  # other GPU work of the same call finishes first (no perturbation)
            meta["gate"] = wait_for_gate(args.start_gate, args.gate_timeout_s)
        probe_ids = heldout_input_ids(Path(args.assets) / "heldout_prompts.jsonl",
                                      args.tau_probe_prompts)
        for phase_levels in (args.levels, list(args.extra_levels or [])):
            for n in live:
                if f"{n}_sweep" in meta["errors"]:
                    continue
                try:
                    done, skipped = sweep_levels(servers[n], phase_levels, args, deadline)
                    results[n].extend(done)
                    if skipped:
                        meta["skipped_levels"].setdefault(n, []).extend(skipped)
                except Exception as exc:  # noqa: BLE001 - keep the other systems
                    meta["errors"][f"{n}_sweep"] = f"{type(exc).__name__}: {exc}"
                    print(f"  {n}: sweep failed: {exc}", flush=True)
                if phase_levels is args.levels and n not in tau_detail:
                    try:
                        tau_detail[n] = tau_probe(servers[n].url, probe_ids, args.max_tokens)
                        taus[n] = tau_detail[n]["tau"]
                    except Exception as exc:  # noqa: BLE001
                        meta["errors"][f"{n}_tau_probe"] = f"{type(exc).__name__}: {exc}"
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - write what was measured
        meta["errors"]["run"] = f"{type(exc).__name__}: {exc}"
    finally:
        for s in servers.values():
            s.stop()
    return results, taus, failed


if __name__ == "__main__":
    sys.exit(main())
