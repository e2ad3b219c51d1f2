"""One HTTP client for the GPU benchmarks: SGLang's native ``/generate`` with ``input_ids``
(plain or streamed), the OpenAI chat route streamed, a closed-loop runner, and the few
synchronous calls the scripts make around a run (``/server_info``, ``/flush_cache``).

Every request comes back as a :class:`GenResult`; nothing raises for a failed request. A request
the server aborted (``finish_reason.type == "abort"``, or an ``error`` chunk in a stream) is
``aborted=True`` and ``ok=False``: it never counts as completed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class GenResult:
    ok: bool
    output_ids: list[int] | None = None
    completion_tokens: int = 0
    spec_verify_ct: int | None = None
    finish_reason: dict | None = None
    ttft_s: float | None = None  # streamed requests only
    latency_s: float = 0.0
    aborted: bool = False
    error: str = ""
    text: str | None = None
    top_logprobs: list | None = None  # meta_info.output_top_logprobs when asked for

    @property
    def finish_type(self) -> str | None:
        return (self.finish_reason or {}).get("type") if self.finish_reason else None

    def as_dict(self) -> dict:
        return asdict(self)


def parse_generate_body(body: dict, t0: float, now: float) -> GenResult:
    """A complete ``/generate`` response (or the last stream chunk) -> :class:`GenResult`."""
    if isinstance(body, list):  # a batch answer for a single request
        body = body[0]
    if body.get("error"):
        err = body["error"]
        return GenResult(False, error=str(err.get("message", err) if isinstance(err, dict)
                                          else err)[:300], latency_s=now - t0, aborted=True)
    meta = body.get("meta_info") or {}
    finish = meta.get("finish_reason")
    ids = body.get("output_ids")
    n = meta.get("completion_tokens")
    n = int(n) if n is not None else len(ids or [])
    aborted = isinstance(finish, dict) and finish.get("type") == "abort"
    verify = meta.get("spec_verify_ct")
    return GenResult(ok=not aborted and finish is not None, output_ids=ids, completion_tokens=n,
                     spec_verify_ct=None if verify is None else int(verify),
                     finish_reason=finish, latency_s=now - t0, aborted=aborted,
                     error=(finish.get("message", "aborted") if aborted else ""),
                     text=body.get("text"), top_logprobs=meta.get("output_top_logprobs"))


async def sse_events(resp):
    """``data:`` payloads of a server-sent-event stream, ``[DONE]`` excluded."""
    buf = b""
    async for raw in resp.content:
        buf += raw
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            yield json.loads(data)


class Client:
    """Async client over one aiohttp session (``async with Client(url) as c: ...``)."""

    def __init__(self, base_url: str, timeout_s: float = 600.0):
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = None

    async def __aenter__(self) -> "Client":
        import aiohttp

        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=0))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def generate(self, input_ids: list[int], sampling_params: dict, stream: bool = False,
                       **extra) -> GenResult:
        """Native ``/generate``; ``extra``: top-level request fields (``return_logprob``, ...).

        Streamed: TTFT is the first chunk that carries output tokens; the last chunk's
        ``meta_info`` gives the counts."""
        import aiohttp

        body = {"input_ids": list(input_ids), "sampling_params": dict(sampling_params),
                "stream": stream, **extra}
        t0 = time.perf_counter()
        try:
            async with self.session.post(self.base + "/generate", json=body) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    return GenResult(False, error=f"HTTP {resp.status}: {text}",
                                     latency_s=time.perf_counter() - t0)
                if not stream:
                    out = await resp.json(content_type=None)
                    return parse_generate_body(out, t0, time.perf_counter())
                ttft, last = None, None
                async for ev in sse_events(resp):
                    if ev.get("error"):
                        return parse_generate_body(ev, t0, time.perf_counter())
                    if ttft is None and ev.get("output_ids"):
                        ttft = time.perf_counter() - t0
                    last = ev
                now = time.perf_counter()
                if last is None:
                    return GenResult(False, error="stream ended without a chunk", latency_s=now - t0)
                res = parse_generate_body(last, t0, now)
                res.ttft_s = ttft
                return res
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
            return GenResult(False, error=f"{type(exc).__name__}: {exc}",
                             latency_s=time.perf_counter() - t0)

    async def chat_stream(self, messages: list[dict], max_tokens: int, temperature: float = 0.0,
                          ignore_eos: bool = False, model: str = "default") -> GenResult:
        """Streamed ``/v1/chat/completions`` (needs a server with a tokenizer): TTFT at the
        first content delta, completion tokens from the usage chunk (else one per chunk)."""
        import aiohttp

        body = {"model": model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "stream": True,
                "stream_options": {"include_usage": True}}
        if ignore_eos:
            body["ignore_eos"] = True
        t0 = time.perf_counter()
        ttft, chunks, tokens, finish, text = None, 0, None, None, []
        try:
            async with self.session.post(self.base + "/v1/chat/completions", json=body) as resp:
                if resp.status != 200:
                    return GenResult(False, error=f"HTTP {resp.status}: "
                                     f"{(await resp.text())[:300]}",
                                     latency_s=time.perf_counter() - t0)
                async for ev in sse_events(resp):
                    if ev.get("error"):
                        return GenResult(False, error=str(ev["error"])[:300], aborted=True,
                                         latency_s=time.perf_counter() - t0)
                    usage = ev.get("usage")
                    if usage and usage.get("completion_tokens") is not None:
                        tokens = int(usage["completion_tokens"])
                    for c in ev.get("choices") or []:
                        piece = (c.get("delta") or {}).get("content")
                        if piece:
                            if ttft is None:
                                ttft = time.perf_counter() - t0
                            chunks += 1
                            text.append(piece)
                        if c.get("finish_reason"):
                            finish = {"type": c["finish_reason"]}
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
            return GenResult(False, error=f"{type(exc).__name__}: {exc}",
                             latency_s=time.perf_counter() - t0)
        aborted = finish is not None and finish["type"] == "abort"
        return GenResult(ok=finish is not None and not aborted,
                         completion_tokens=tokens if tokens is not None else chunks,
                         finish_reason=finish, ttft_s=ttft, latency_s=time.perf_counter() - t0,
                         aborted=aborted, text="".join(text))


@dataclass
class ClosedLoopRun:
    concurrency: int
    wall_s: float
    results: list[GenResult] = field(default_factory=list)  # in request order


async def closed_loop(client: Client, requests: list[dict], concurrency: int,
                      stream: bool = False) -> ClosedLoopRun:
    """``concurrency`` workers take the requests in order (each ``{"input_ids",
    "sampling_params"}``) until none is left; the wall time runs from the first send to the
    last answer. Results keep the request order."""
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: must be >= 1")
    results: list[GenResult | None] = [None] * len(requests)
    nxt = 0

    async def worker():
        nonlocal nxt
        while nxt < len(requests):
            i = nxt
            nxt += 1
            rq = requests[i]
            results[i] = await client.generate(rq["input_ids"], rq["sampling_params"], stream)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(requests))))))
    return ClosedLoopRun(concurrency, time.perf_counter() - t0, list(results))


# ---- synchronous calls around a run ---------------------------------------------------------
def http_json(url: str, payload: dict | None = None, timeout: float = 60.0):
    """GET (``payload`` None) or POST JSON; the decoded body (text when not JSON)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read().decode()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body


def server_accept_length(base_url: str, timeout: float = 30.0) -> float | None:
    """``avg_spec_accept_length`` of ``/server_info`` (cumulative since start or the last
    ``/flush_cache``); None when the server reports none."""
    try:
        info = http_json(base_url.rstrip("/") + "/server_info", timeout=timeout)
    except (OSError, urllib.error.URLError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    for st in info.get("internal_states") or [info]:
        if isinstance(st, dict) and st.get("avg_spec_accept_length") is not None:
            return float(st["avg_spec_accept_length"])
    return None


def flush_cache(base_url: str, tries: int = 10, pause_s: float = 0.5) -> bool:
    """``/flush_cache`` (radix cache and, in SGLang 0.5.17, the accept-length counters); it
    only succeeds on an idle server, so retry a few times."""
    for _ in range(tries):
        try:
            http_json(base_url.rstrip("/") + "/flush_cache", {}, timeout=30)
            return True
        except (OSError, urllib.error.URLError) as exc:
            logger.debug("flush_cache %s: %s", base_url, exc)
            time.sleep(pause_s)
    return False


def load_summary(loads) -> dict:
    """The KV / queue fields of a ``/v1/loads`` answer (first data-parallel rank)."""
    items = loads.get("loads", loads) if isinstance(loads, dict) else loads
    first = items[0] if isinstance(items, list) and items else items
    if not isinstance(first, dict):
        return {"raw": str(loads)[:300]}
    return {k: first.get(k) for k in ("num_running_reqs", "num_waiting_reqs", "num_used_tokens",
                                      "token_usage", "max_total_num_tokens")}
