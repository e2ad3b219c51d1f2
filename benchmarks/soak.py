"""Bounded soak of a Domino SGLang server (Issue 7): ``--concurrency`` client threads send mixed
requests (greedy / sampled / chat / streamed / client-aborted / JSON-schema / bad requests
expected to be refused) for ``--duration-s`` seconds, loopback only, and then stop by
themselves. Every ``--sample-every`` seconds it records ``/v1/loads`` (running, waiting, used KV
tokens), the server processes' RSS (when it started the server) and GPU memory (``nvidia-smi``,
if present), and rewrites the partial JSON. At the end: drain, ``/flush_cache``, used KV tokens
must be 0; errors are counted by class.

Pass: server alive and 0 scheduler exceptions; no errors other than the expected 4xx of the bad
requests (timeouts, 5xx, connection errors, unexpected 4xx all count); memory steady (RSS and
GPU memory of the last quarter within ``--mem-tolerance`` of the first quarter after warm-up);
0 used KV tokens after the flush.

Usage (H200; starts its own Domino server on the trained tiny pair, ~140 s start-up)::

    timeout -s TERM 570 python3 benchmarks/soak.py --duration-s 360 --out-dir $OUT
    python3 benchmarks/soak.py --base-url http://127.0.0.1:30000 --duration-s 1200   # attach

Writes ``soak_<stamp>.json`` and ``soak_<stamp>.md`` under ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from domino_sglang.bench.client import (REJECTED, call, call_stream, check_loopback, classify,
                                        error_message, flush_cache, loads_now, served_model_id)
from domino_sglang.bench.harness import (add_seed_extra_commit_args, environment_fields,
                                         on_term, parse_recording_argv,
                                         provenance, provenance_lines, stamp, write_results)
from domino_sglang.bench.reliability import (BAD_REQUESTS, DEFAULT_DRAFT, DEFAULT_PROMPTS,
                                             DEFAULT_TARGET, SCHEMA, checks_markdown)
from domino_sglang.bench.servers import (Server, scan_log, server_flags, sglang_command,
                                         spec_flags)
from domino_sglang.bench.side_by_side import load_prompt_ids

KINDS = {  # kind -> weight
    "greedy": 30, "sampled": 20, "chat": 10, "stream": 10, "abort": 10, "json": 5, "bad": 10,
    "long": 5}
BAD_POOL = [c for c in BAD_REQUESTS if c.expect == "reject" and not c.stream]


def pick_kind(rng: random.Random, kinds: dict = KINDS) -> str:
    names = list(kinds)
    return rng.choices(names, weights=[kinds[k] for k in names])[0]


def build_request(kind: str, rng: random.Random, prompts: list, ctx: dict) -> dict:
    """-> {endpoint, payload, stream, abort_after, expect_reject}: mixed parameters."""
    ids = rng.choice(prompts)
    mnt = rng.choice([1, 8, 32, 64, 128, 256])
    if kind == "greedy":
        sp = {"max_new_tokens": mnt, "temperature": 0.0}
        return {"endpoint": "/generate", "payload": {"input_ids": ids, "sampling_params": sp}}
    if kind == "sampled":
        sp = {"max_new_tokens": mnt, "temperature": rng.choice([0.3, 0.7, 1.0, 1.5]),
              "top_p": rng.choice([0.5, 0.9, 1.0]), "top_k": rng.choice([-1, 5, 50])}
        if rng.random() < 0.3:
            sp["repetition_penalty"] = 1.1
        return {"endpoint": "/generate", "payload": {"input_ids": ids, "sampling_params": sp}}
    if kind == "chat":
        return {"endpoint": "/v1/chat/completions", "payload": {
            "model": ctx["model"], "max_tokens": mnt,
            "temperature": rng.choice([0.0, 0.0, 0.7]),
            "messages": [{"role": "user", "content": rng.choice(
                ["Say hello.", "Write a short poem about the sea.", "What is 2 + 2?",
                 "Explain recursion in one sentence."])}]}}
    if kind in ("stream", "abort"):
        sp = {"max_new_tokens": 256 if kind == "abort" else mnt,
              "temperature": rng.choice([0.0, 0.8]), "ignore_eos": kind == "abort"}
        return {"endpoint": "/generate", "stream": True,
                "abort_after": rng.randint(1, 6) if kind == "abort" else None,
                "payload": {"input_ids": ids, "sampling_params": sp}}
    if kind == "json":
        return {"endpoint": "/generate", "payload": {"input_ids": ids, "sampling_params": {
            "max_new_tokens": 96, "temperature": rng.choice([0.0, 0.8]),
            "json_schema": json.dumps(SCHEMA)}}}
    if kind == "long":  # near the context: long prompt, few new tokens
        n = ctx["context_len"] - 80
        long_ids = [rng.randrange(5, ctx["vocab_size"] - 1) for _ in range(n)]
        return {"endpoint": "/generate", "payload": {"input_ids": long_ids, "sampling_params": {
            "max_new_tokens": 64, "temperature": 0.0}}}
    if kind == "bad":
        case = rng.choice(BAD_POOL)
        return {"endpoint": case.endpoint, "payload": case.build(ctx), "expect_reject": True,
                "case": case.name}
    raise ValueError(f"unknown kind {kind!r}")


def error_class(kind: str, outcome: str, expect_reject: bool) -> str:
    """ok | expected_4xx | client_abort | unexpected_accept | unexpected_4xx | timeout |
    server_error | connection_error."""
    if expect_reject:
        return "expected_4xx" if outcome in REJECTED else (
            "unexpected_accept" if outcome == "ok" else outcome)
    if outcome in REJECTED:
        return "unexpected_4xx"
    if outcome == "client_abort" and kind != "abort":
        return "unexpected_client_abort"
    return outcome


BENIGN = ("ok", "expected_4xx", "client_abort")


def memory_trend(values: list, warmup_frac: float = 0.2) -> dict:
    """Growth of the mean of the last quarter over the first quarter, after warm-up."""
    xs = [v for v in values if v is not None]
    xs = xs[int(len(xs) * warmup_frac):]
    if len(xs) < 4:
        return {"samples": len(xs), "growth": None}
    q = max(1, len(xs) // 4)
    first, last = sum(xs[:q]) / q, sum(xs[-q:]) / q
    growth = (last - first) / first if first else 0.0
    return {"samples": len(xs), "first_q_mean": round(first, 1), "last_q_mean": round(last, 1),
            "growth": round(growth, 4), "max": max(xs)}


def process_group_rss_mb(pgid: int) -> float | None:
    total, seen = 0, False
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:  # fields: state ppid pgrp ...
                continue
            for line in Path(f"/proc/{d}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    seen = True
        except (OSError, ValueError, IndexError):
            continue
    return round(total / 1024, 1) if seen else None


def gpu_memory_mb() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10)
        return float(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


class Soak:
    def __init__(self, url: str, prompts: list, ctx: dict, args, pgid: int | None):
        self.url, self.prompts, self.ctx, self.args, self.pgid = url, prompts, ctx, args, pgid
        self.lock = threading.Lock()
        self.counts: dict = {}  # kind -> class -> n
        self.samples: list = []
        self.error_samples: list = []
        self.latency_s: dict = {}
        self.first_ok_s: dict = {}  # kind -> seconds from the start to its first benign answer
        self.errors_by_minute: dict = {}  # minute of the soak -> non-benign outcomes
        self.stop = threading.Event()

    def record(self, kind: str, cls: str, msg: str, elapsed: float, case: str | None) -> None:
        with self.lock:
            self.counts.setdefault(kind, {})
            self.counts[kind][cls] = self.counts[kind].get(cls, 0) + 1
            self.latency_s.setdefault(kind, []).append(elapsed)
            now = time.time() - self.t0
            if cls in BENIGN:
                self.first_ok_s.setdefault(kind, round(now, 1))
            else:
                minute = int(now // 60)
                self.errors_by_minute[minute] = self.errors_by_minute.get(minute, 0) + 1
            if cls not in BENIGN and len(self.error_samples) < 50:
                self.error_samples.append({"t": round(now, 1), "kind": kind,
                                           "class": cls, "case": case, "message": msg[:300]})

    def worker(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        while not self.stop.is_set() and time.time() < self.deadline:
            kind = pick_kind(rng)
            rq = build_request(kind, rng, self.prompts, self.ctx)
            url = self.url + rq["endpoint"]
            if rq.get("stream"):
                r = call_stream(url, rq["payload"], timeout=self.args.request_timeout,
                                abort_after=rq.get("abort_after"))
            else:
                r = call(url, rq["payload"], timeout=self.args.request_timeout)
            outcome = classify(r)
            cls = error_class(kind, outcome, rq.get("expect_reject", False))
            msg = error_message(r) if cls not in BENIGN else ""
            self.record(kind, cls, msg, r.elapsed_s, rq.get("case"))
            if cls == "connection_error":  # the server is down or restarting: no busy loop
                time.sleep(0.5)

    def sample(self) -> None:
        loads = loads_now(self.url)
        s = {"t": round(time.time() - self.t0, 1), "loads": loads,
             "server_rss_mb": process_group_rss_mb(self.pgid) if self.pgid else None,
             "gpu_mem_mb": gpu_memory_mb()}
        with self.lock:
            s["requests_so_far"] = sum(sum(c.values()) for c in self.counts.values())
            self.samples.append(s)

    def run(self) -> None:
        self.t0 = time.time()
        self.deadline = self.t0 + self.args.duration_s
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                   for i in range(self.args.concurrency)]
        for t in threads:
            t.start()
        self.sample()
        next_sample = self.t0 + self.args.sample_every
        while time.time() < self.deadline and not self.stop.is_set():
            time.sleep(min(1.0, max(0.0, next_sample - time.time())))
            if self.is_dead is not None and self.is_dead():
                self.died_at_s = round(time.time() - self.t0, 1)
                break
            if time.time() >= next_sample:
                self.sample()
                next_sample += self.args.sample_every
                if self.on_sample:
                    self.on_sample()
        self.stop.set()
        join_until = time.time() + self.args.request_timeout + 10
        for t in threads:
            t.join(max(0.0, join_until - time.time()))
        self.stragglers = sum(t.is_alive() for t in threads)
        self.sample()

    on_sample = None
    is_dead = None  # callable: True once the server process has exited (stop early)
    died_at_s = None


def summarize(soak: Soak, final_loads: dict, liveness: dict, args) -> dict:
    with soak.lock:  # the workers may still be recording (partial summaries)
        counts = json.loads(json.dumps(soak.counts))
        samples = list(soak.samples)
        latency = {k: list(v) for k, v in soak.latency_s.items()}
    by_class: dict = {}
    for per in counts.values():
        for cls, n in per.items():
            by_class[cls] = by_class.get(cls, 0) + n
    unexpected = {c: n for c, n in by_class.items() if c not in BENIGN}
    mem = {"server_rss_mb": memory_trend([s.get("server_rss_mb") for s in samples]),
           "gpu_mem_mb": memory_trend([s.get("gpu_mem_mb") for s in samples]),
           "kv_used_tokens": [s["loads"].get("num_used_tokens") for s in samples]}

    def steady(t):
        return t["growth"] is None or t["growth"] <= args.mem_tolerance

    checks = {
        "no_crash": liveness.get("alive") is not False and not liveness.get(
            "scheduler_exceptions"),
        "no_unexpected_errors": not unexpected,
        "memory_steady": steady(mem["server_rss_mb"]) and steady(mem["gpu_mem_mb"]),
        "kv_tokens_zero_after_flush": final_loads.get("num_used_tokens") == 0,
        "stopped_by_itself": getattr(soak, "stragglers", 0) == 0,
    }
    lat = {k: {"n": len(v), "p50": _q(v, 0.5), "p99": _q(v, 0.99)} for k, v in latency.items()}
    with soak.lock:
        first_ok = dict(soak.first_ok_s)
        by_minute = {str(k): v for k, v in sorted(soak.errors_by_minute.items())}
    return {"requests": sum(by_class.values()), "by_class": by_class, "by_kind": counts,
            "unexpected": unexpected, "error_samples": soak.error_samples[:20],
            "first_ok_s": first_ok, "errors_by_minute": by_minute,
            "server_died_at_s": soak.died_at_s,
            "latency_s": lat, "memory": mem, "samples": samples, "final_loads": final_loads,
            "liveness": liveness, "checks": checks, "ok": all(checks.values())}


def _q(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p * len(s)))], 3)


def render_markdown(res: dict) -> str:
    s = res.get("summary") or {}
    lines = [f"# Soak {res.get('started')} ({res.get('device', '')})", "",
             *provenance_lines(res.get("meta") or {}), "",
             f"duration {res['args']['duration_s']} s, concurrency {res['args']['concurrency']},"
             f" {s.get('requests')} requests, wall {res.get('wall_s')} s, ok: {s.get('ok')}", "",
             *checks_markdown(s.get("checks"), res.get("error")),
             "", "| class | count |", "| --- | --- |"]
    for k, v in sorted((s.get("by_class") or {}).items()):
        lines.append(f"| {k} | {v} |")
    if s.get("first_ok_s"):
        lines += ["", "first benign answer per kind (s from the start): " + ", ".join(
            f"{k} {v}" for k, v in sorted(s["first_ok_s"].items()))]
    if s.get("errors_by_minute"):
        lines += ["", "non-benign outcomes by minute of the soak: " + ", ".join(
            f"minute {k}: {v}" for k, v in s["errors_by_minute"].items())]
    lines += ["", "## memory", "", "```", json.dumps(s.get("memory"), default=str)[:2000], "```"]
    if s.get("error_samples"):
        lines += ["", "## error samples", ""] + [
            f"- t={e['t']} {e['kind']} {e['class']}: {e['message'][:160]}"
            for e in s["error_samples"][:10]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", help="attach to a running loopback server (else start one)")
    ap.add_argument("--server-pid", type=int, default=None,
                    help="with --base-url: the server's process-group leader (e.g. the pid "
                    "launch/serve.py --detach prints), to sample its RSS")
    ap.add_argument("--server-log", default=None,
                    help="with --base-url: the server's log, scanned for scheduler exceptions")
    ap.add_argument("--target", default=str(DEFAULT_TARGET))
    ap.add_argument("--draft", default=str(DEFAULT_DRAFT))
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--duration-s", type=float, default=1200)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--sample-every", type=float, default=30)
    ap.add_argument("--request-timeout", type=float, default=60)
    ap.add_argument("--mem-tolerance", type=float, default=0.05,
                    help="allowed growth of memory, last vs first quarter")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--mem-fraction", type=float, default=0.5)
    ap.add_argument("--max-total-tokens", type=int, default=262144)
    ap.add_argument("--port", type=int, default=31200)
    ap.add_argument("--startup-timeout", type=float, default=220)
    add_seed_extra_commit_args(ap.add_argument)
    return ap


def main(argv=None) -> int:
    args = parse_recording_argv(build_parser(), argv, __file__)
    t_start = time.time()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = stamp()
    stem = f"soak_{started}"
    jpath = out_dir / f"{stem}.json"
    meta = provenance(args.argv, args.commit)
    res: dict = {"meta": meta, "args": vars(args), "started": started,
                 "command": meta["command"], **environment_fields(meta)}
    # hard stop: whatever happens, the process ends (results written) after this
    hard_s = args.duration_s + args.startup_timeout + args.request_timeout + 120
    server = None

    def write(partial: bool) -> None:
        res["wall_s"], res["partial"] = round(time.time() - t_start, 1), partial
        write_results(out_dir, stem, res, render_markdown(res))

    def hard_stop():
        res["error"] = f"hard stop after {hard_s:.0f} s"
        try:
            write(True)
        finally:
            if server is not None and server.proc and server.proc.poll() is None:
                os.killpg(server.proc.pid, signal.SIGKILL)
            os._exit(3)

    timer = threading.Timer(hard_s, hard_stop)
    timer.daemon = True
    timer.start()

    signal.signal(signal.SIGTERM, on_term)
    cfg = json.loads((Path(args.target) / "config.json").read_text())
    prompts = load_prompt_ids(Path(args.prompts))
    ctx = {"prompt_ids": prompts[0], "vocab_size": cfg["vocab_size"], "model": args.target,
           "context_len": int(cfg.get("max_position_embeddings", 2048))}
    ctx["long_ids"] = [5 + i % (cfg["vocab_size"] - 10) for i in range(ctx["context_len"] + 500)]
    soak = None
    ok = False
    try:
        if args.base_url:
            check_loopback(args.base_url)
            url = args.base_url.rstrip("/")
            pgid = os.getpgid(args.server_pid) if args.server_pid else None
        else:
            flags = server_flags(args.target, args.dtype, args.mem_fraction,
                                 args.max_total_tokens, args.seed, args.extra_server_args)
            flags += spec_flags("domino", args.draft, args.block_size)
            server = Server("domino", args.port, sglang_command(args.port, flags),
                            out_dir / f"{stem}_server_domino.log")
            server.start()
            if not server.wait_ready(args.startup_timeout):
                raise RuntimeError("the Domino server did not start")
            res["ready_s"] = server.ready_s
            url, pgid = server.url, os.getpgid(server.proc.pid)
        ctx["model"] = served_model_id(url) or args.target
        soak = Soak(url, prompts, ctx, args, pgid)

        def on_sample():
            res["summary"] = summarize(soak, {}, {}, args)
            write(True)

        soak.on_sample = on_sample
        if server is not None:
            soak.is_dead = lambda: server.proc.poll() is not None
        soak.run()
        flush_cache(url, tries=10, pause_s=2)
        time.sleep(1)
        final = loads_now(url)
        live = {"alive": server.proc.poll() is None if server else classify(
            call(url + "/health", timeout=10)) == "ok"}
        if server:
            live.update(scan_log(server.log_path))
        elif args.server_log:
            live.update(scan_log(Path(args.server_log)))
        res["summary"] = summarize(soak, final, live, args)
        ok = res["summary"]["ok"]
    except BaseException as exc:  # noqa: BLE001  SIGTERM: keep what was measured
        res["error"] = f"{type(exc).__name__}: {exc}"
        if soak is not None:
            soak.stop.set()
            res["summary"] = summarize(soak, {}, {}, args)
    finally:
        if server is not None:
            server.stop()
        timer.cancel()
        write(False)
        s = res.get("summary") or {}
        print(json.dumps({"ok": ok, "checks": s.get("checks"), "by_class": s.get("by_class"),
                          "error": res.get("error"), "wall_s": res.get("wall_s")}, indent=1))
        print("results:", jpath)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
