"""`domino-load`: an async load generator for OpenAI-compatible servers (SGLang and others).

Closed loop (default): for each concurrency level (1 2 4 8 16 32 64), C workers each send a
request, wait for it to finish and send the next, until ``--requests-per-level`` requests are
done or ``--duration-s`` has passed. Open loop (``--request-rate R``): requests arrive as a
Poisson process of R requests/s (``inf``: all at once), bounded the same way.

Measured per level: output tokens/s, requests/s, TTFT, TPOT (per request: (latency - TTFT) /
(tokens - 1)), ITL (gaps between streamed chunks), end-to-end latency (p50/p90/p99), errors, and
the server's accept length (``/server_info`` -> ``avg_spec_accept_length``, when it reports one).
Results go to ``OUT/LABEL.json`` and ``OUT/LABEL.csv``; ``OUT/throughput_latency.png`` plots
every ``*.json`` in OUT, one line per system, so running it once per server gives a
side-by-side comparison.

Examples::

    domino-load --base-url http://127.0.0.1:30000 --label domino --prompts sharegpt
    domino-load --base-url http://127.0.0.1:30001 --label ar --concurrency 1 16 --max-tokens 256
    domino-load --base-url http://127.0.0.1:30000 --request-rate 8 --duration-s 60
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .client import sse_events

logger = logging.getLogger(__name__)


@dataclass
class RequestResult:
    ok: bool
    output_tokens: int = 0
    ttft_s: float = 0.0
    latency_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    error: str = ""
    status: int = 0


@dataclass
class LevelResult:
    mode: str  # "closed" or "open"
    level: float  # concurrency, or request rate
    completed: int
    errors: int
    duration_s: float
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    ttft_ms: dict
    tpot_ms: dict
    itl_ms: dict
    latency_ms: dict
    accept_length: float | None
    error_samples: list[str]


def percentiles(values: list[float], scale: float = 1000.0) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    xs = sorted(values)

    def q(p):
        i = min(len(xs) - 1, max(0, math.ceil(p * len(xs)) - 1))
        return xs[i] * scale

    return {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "mean": sum(xs) / len(xs) * scale}


class Client:
    """One request at a time over a shared aiohttp session."""

    def __init__(self, session, base_url: str, args):
        self.session, self.base, self.args = session, base_url.rstrip("/"), args

    def _payload(self, prompt: str) -> tuple[str, dict]:
        a = self.args
        body = {"model": a.model, "max_tokens": a.max_tokens, "temperature": a.temperature,
                "top_p": a.top_p, "stream": a.stream}
        if a.ignore_eos:
            body["ignore_eos"] = True
        if a.stream:
            body["stream_options"] = {"include_usage": True}
        if a.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            return f"{self.base}/v1/chat/completions", body
        body["prompt"] = prompt
        return f"{self.base}/v1/completions", body

    async def send(self, prompt: str) -> RequestResult:
        import aiohttp

        url, body = self._payload(prompt)
        t0 = time.perf_counter()
        try:
            async with self.session.post(url, json=body) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:200]
                    return RequestResult(False, error=f"HTTP {resp.status}: {text}",
                                         status=resp.status, latency_s=time.perf_counter() - t0)
                if not self.args.stream:
                    data = await resp.json()
                    t = time.perf_counter() - t0
                    n = int((data.get("usage") or {}).get("completion_tokens") or 0)
                    return RequestResult(True, n, t, t, status=200)
                return await self._read_stream(resp, t0)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return RequestResult(False, error=f"{type(exc).__name__}: {exc}",
                                 latency_s=time.perf_counter() - t0)

    async def _read_stream(self, resp, t0: float) -> RequestResult:
        res = RequestResult(True, status=200)
        last = None
        chunks = 0
        async for obj in sse_events(resp):
            if obj.get("error"):
                res.ok, res.error = False, str(obj["error"])[:200]
            usage = obj.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                res.output_tokens = int(usage["completion_tokens"])
            choices = obj.get("choices") or []
            if not choices:
                continue
            c = choices[0]
            piece = (c.get("delta") or {}).get("content") if "delta" in c else c.get("text")
            if piece:
                now = time.perf_counter()
                if last is None:
                    res.ttft_s = now - t0
                else:
                    res.itl_s.append(now - last)
                last = now
                chunks += 1
        res.latency_s = time.perf_counter() - t0
        if res.output_tokens == 0:
            res.output_tokens = chunks  # servers without usage in the stream: one token a chunk
        return res


async def server_accept_length(session, base_url: str) -> float | None:
    for path in ("/server_info", "/get_server_info"):
        try:
            async with session.get(base_url.rstrip("/") + path) as resp:
                if resp.status != 200:
                    continue
                info = await resp.json()
        except Exception:  # noqa: BLE001 - any failure means "not reported"
            continue
        states = info.get("internal_states") or [info]
        for s in states:
            if isinstance(s, dict) and s.get("avg_spec_accept_length") is not None:
                return float(s["avg_spec_accept_length"])
        return None
    return None


def _summarize(mode, level, results: list[RequestResult], duration, accept) -> LevelResult:
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    tpot = [(r.latency_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return LevelResult(
        mode=mode, level=level, completed=len(ok), errors=len(results) - len(ok),
        duration_s=duration, output_tokens=tokens,
        output_tokens_per_s=tokens / duration if duration > 0 else 0.0,
        requests_per_s=len(ok) / duration if duration > 0 else 0.0,
        ttft_ms=percentiles([r.ttft_s for r in ok]), tpot_ms=percentiles(tpot),
        itl_ms=percentiles([x for r in ok for x in r.itl_s]),
        latency_ms=percentiles([r.latency_s for r in ok]), accept_length=accept,
        error_samples=sorted({r.error for r in results if not r.ok})[:5])


async def run_level(client, session, args, prompts, mode: str, level: float, bar) -> LevelResult:
    results: list[RequestResult] = []
    deadline = time.perf_counter() + args.duration_s
    n_total = args.requests_per_level
    issued = 0
    t0 = time.perf_counter()

    def take():
        nonlocal issued
        if issued >= n_total or time.perf_counter() >= deadline:
            return None
        p = prompts[issued % len(prompts)]
        issued += 1
        return p

    async def one(prompt):
        r = await client.send(prompt)
        results.append(r)
        if bar is not None:
            bar.update(1)

    if mode == "closed":
        async def worker():
            while (p := take()) is not None:
                await one(p)
        await asyncio.gather(*(worker() for _ in range(int(level))))
    else:
        rng = random.Random(args.seed)
        tasks = []
        while (p := take()) is not None:
            tasks.append(asyncio.create_task(one(p)))
            if math.isfinite(level) and level > 0:
                await asyncio.sleep(rng.expovariate(level))
        await asyncio.gather(*tasks)
    duration = time.perf_counter() - t0
    accept = await server_accept_length(session, args.base_url)
    return _summarize(mode, level, results, duration, accept)


async def run(args) -> dict:
    import aiohttp

    from ..prompts import load_prompts

    prompts = load_prompts(args.prompts, args.num_prompts, seed=args.seed)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout_s)
    levels = ([("open", r) for r in args.request_rate] if args.request_rate
              else [("closed", c) for c in args.concurrency])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(session, args.base_url, args)
        for i in range(args.warmup):
            r = await client.send(prompts[i % len(prompts)])
            if not r.ok:
                raise RuntimeError(f"warm-up request failed: {r.error}")
        out = []
        bar = None
        if args.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(levels) * args.requests_per_level, desc=args.label,
                       unit="req", file=sys.stderr)
        for mode, level in levels:
            if bar is not None:
                bar.set_postfix_str(f"{mode} {level:g}")
            res = await run_level(client, session, args, prompts, mode, level, bar)
            out.append(res)
            logger.info("%s %s=%g: %.1f tok/s, %d ok, %d errors", args.label,
                        "concurrency" if mode == "closed" else "rate", level,
                        res.output_tokens_per_s, res.completed, res.errors)
        if bar is not None:
            bar.close()
    return {"label": args.label, "base_url": args.base_url, "api": args.api,
            "stream": args.stream, "prompts": args.prompts, "max_tokens": args.max_tokens,
            "temperature": args.temperature, "top_p": args.top_p,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "python": platform.python_version(),
            "command": " ".join(sys.argv), "levels": [asdict(r) for r in out]}


def write_outputs(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    label = result["label"]
    jpath = out_dir / f"{label}.json"
    jpath.write_text(json.dumps(result, indent=2))
    cpath = out_dir / f"{label}.csv"
    cols = ["mode", "level", "completed", "errors", "duration_s", "output_tokens",
            "output_tokens_per_s", "requests_per_s", "accept_length"]
    nested = ["ttft_ms", "tpot_ms", "itl_ms", "latency_ms"]
    with cpath.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label"] + cols + [f"{m}_{p}" for m in nested for p in ("p50", "p90", "p99")])
        for lv in result["levels"]:
            w.writerow([label] + [lv[c] for c in cols]
                       + [lv[m][p] for m in nested for p in ("p50", "p90", "p99")])
    return [jpath, cpath, plot_dir(out_dir)]


def plot_dir(out_dir: Path) -> Path:
    """Throughput and latency vs concurrency (or rate), one line per system, from *.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for path in sorted(out_dir.glob("*.json")):
        try:
            res = json.loads(path.read_text())
            levels = res["levels"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        xs = [lv["level"] for lv in levels]
        axes[0].plot(xs, [lv["output_tokens_per_s"] for lv in levels], "o-", label=res["label"])
        axes[1].plot(xs, [lv["tpot_ms"]["p50"] for lv in levels], "o-", label=res["label"])
        axes[2].plot(xs, [lv["ttft_ms"]["p50"] for lv in levels], "o-", label=res["label"])
    names = ["output tokens/s", "TPOT p50 (ms)", "TTFT p50 (ms)"]
    for ax, name in zip(axes, names):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (closed loop) / request rate (open loop)")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png = out_dir / "throughput_latency.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


PROMPT_SOURCES = ("sharegpt", "humaneval", "random")


def build_parser():
    from ..cli._common import CliParser, plain

    p = CliParser(prog="domino-load", description=plain(__doc__))
    a = p.add_argument
    a("--base-url", default="http://127.0.0.1:30000", metavar="URL",
      help="server root (default: %(default)s)")
    a("--label", default="server", help="system name in files and plots (default: %(default)s)")
    a("--model", default="default", help="the `model` field of requests (default: %(default)s)")
    a("--api", choices=["chat", "completions"], default="chat",
      help="/v1/chat/completions or /v1/completions (default: %(default)s)")
    a("--stream", action=argparse.BooleanOptionalAction, default=True,
      help="stream responses; needed for TTFT/ITL (default: on)")
    a("--prompts", default="sharegpt", metavar="SOURCE",
      help="sharegpt, humaneval, random or a PATH.jsonl file (default: %(default)s)")
    a("--num-prompts", type=int, default=512, metavar="N",
      help="prompt pool size (default: %(default)s)")
    a("--max-tokens", type=int, default=256, metavar="N",
      help="max output tokens (default: %(default)s)")
    a("--ignore-eos", action="store_true",
      help="ask the server to ignore EOS, an SGLang extension (default: off)")
    a("--temperature", type=float, default=0.0, metavar="T",
      help="sampling temperature, 0 = greedy (default: %(default)s)")
    a("--top-p", type=float, default=1.0, metavar="P",
      help="nucleus sampling mass, 1 = off (default: %(default)s)")
    a("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], metavar="C",
      help="closed-loop levels: requests in flight (default: 1 2 4 8 16 32 64)")
    a("--request-rate", type=float, nargs="+", default=None, metavar="R",
      help="open-loop arrival rates in requests/s ('inf' = all at once); replaces the "
           "concurrency sweep (default: none)")
    a("--requests-per-level", type=int, default=64, metavar="N",
      help="requests per level, at most (default: %(default)s)")
    a("--duration-s", type=float, default=120.0, metavar="S",
      help="seconds per level, at most: no new request after it (default: %(default)s)")
    a("--request-timeout-s", type=float, default=600.0, metavar="S",
      help="seconds before one request is given up (default: %(default)s)")
    a("--warmup", type=int, default=2, metavar="N",
      help="warm-up requests before measuring (default: 2)")
    a("--seed", type=int, default=0, metavar="N",
      help="prompt shuffle and arrival seed (default: 0)")
    a("--out", type=Path, default=Path("benchmarks/results/load"), metavar="DIR",
      help="output folder (default: %(default)s)")
    a("--progress", action=argparse.BooleanOptionalAction, default=None,
      help="progress bar (default: on when stderr is a terminal)")
    return p


def validate_args(args) -> None:
    """Every input, before any request is sent or file written (raises CliError)."""
    from urllib.parse import urlparse

    from ..cli._common import CliError, check_number, check_output_dir

    url = urlparse(args.base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CliError("--base-url", args.base_url, "not an http(s) URL",
                       "e.g. http://127.0.0.1:30000")
    try:
        url.port
    except ValueError:
        raise CliError("--base-url", args.base_url, "bad port", "e.g. http://127.0.0.1:30000") from None
    if not args.label or any(c in args.label for c in "/\\") or args.label.startswith("."):
        raise CliError("--label", args.label, "used as a file name: must be non-empty, without "
                       "'/' and not start with '.'", "e.g. domino")
    for flag, value in (("--num-prompts", args.num_prompts), ("--max-tokens", args.max_tokens),
                        ("--requests-per-level", args.requests_per_level)):
        check_number(flag, value, ge=1)
    check_number("--warmup", args.warmup, ge=0, fix="use 0 for no warm-up")
    check_number("--temperature", args.temperature, ge=0, fix="0 = greedy")
    check_number("--top-p", args.top_p, gt=0, le=1, fix="1 = off")
    check_number("--duration-s", args.duration_s, gt=0)
    check_number("--request-timeout-s", args.request_timeout_s, gt=0)
    for c in args.concurrency:
        check_number("--concurrency", c, ge=1, fix="levels are requests in flight, e.g. 1 4 16")
    for r in args.request_rate or []:
        if not (r > 0):  # inf is allowed (all at once), nan is not
            raise CliError("--request-rate", r, "must be > 0 requests/s", "or inf (all at once)")
    if args.prompts not in PROMPT_SOURCES:
        path = Path(args.prompts)
        if not path.is_file():
            raise CliError("--prompts", args.prompts, "neither a known source nor a file",
                           "use sharegpt, humaneval, random or a PATH.jsonl file")
    check_output_dir("--out", args.out)


def check_reachable(base_url: str, timeout_s: float = 5.0) -> None:
    """A TCP connection to the server opens (before the sweep starts)."""
    import socket
    from urllib.parse import urlparse

    from ..cli._common import CliError

    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise CliError("--base-url", base_url, f"cannot connect ({exc.strerror or exc})",
                       "start the server first or fix the URL") from None


def main(argv: list[str] | None = None) -> int:
    from ..cli._common import run_cli

    def body(argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        validate_args(args)
        if args.progress is None:
            args.progress = sys.stderr.isatty()
        check_reachable(args.base_url)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        result = asyncio.run(run(args))
        paths = write_outputs(result, args.out)
        print(f"{'level':>8}{'ok':>6}{'err':>5}{'tok/s':>10}{'req/s':>8}{'TTFT p50':>10}"
              f"{'TPOT p50':>10}{'accept':>8}")
        for lv in result["levels"]:
            f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            print(f"{lv['level']:>8g}{lv['completed']:>6}{lv['errors']:>5}"
                  f"{lv['output_tokens_per_s']:>10.1f}{lv['requests_per_s']:>8.2f}"
                  f"{f(lv['ttft_ms']['p50']):>10}{f(lv['tpot_ms']['p50']):>10}"
                  f"{f(lv['accept_length']):>8}")
        print("wrote", ", ".join(str(p) for p in paths))
        return 0 if all(lv["completed"] > 0 for lv in result["levels"]) else 1

    return run_cli("domino-load", argv, body)


if __name__ == "__main__":
    sys.exit(main())
