"""One HTTP client for the GPU benchmarks: SGLang's native ``/generate`` with ``input_ids``
(plain or streamed), the OpenAI chat route streamed, a closed-loop runner, and the synchronous
calls the scripts make around a run (``/server_info``, ``/flush_cache``, ``/v1/loads``) or to
probe a server (any route, any body, streamed or not).

Every async request comes back as a :class:`GenResult`; nothing raises for a failed request. A
request the server aborted (``finish_reason.type == "abort"``, or an ``error`` chunk in a
stream) is ``aborted=True`` and ``ok=False``: it never counts as completed.

The synchronous probe, :func:`call` / :func:`call_stream`, returns a :class:`Resp` (status,
parsed body, transport error, timeout) and never raises either; :func:`classify` names its
outcome (``ok``, ``rejected``, ``rejected_in_body``, ``server_error``, ``timeout``,
``connection_error``, ``client_abort``) and :func:`error_message` the server's reason.
:func:`http_json` is the raising shortcut for scripts that want the body or an exception.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

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


SSE_DONE = b"[DONE]"


def sse_data(line: bytes) -> bytes | None:
    """The payload of one server-sent-event line (``SSE_DONE`` at the end of the stream); None
    for a line that is not ``data:``."""
    line = line.strip()
    return line[5:].strip() if line.startswith(b"data:") else None


async def sse_events(resp):
    """``data:`` payloads of a server-sent-event stream, ``[DONE]`` excluded."""
    buf = b""
    async for raw in resp.content:
        buf += raw
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            data = sse_data(line)
            if data is None:
                continue
            if data == SSE_DONE:
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


# ---- synchronous calls: status + body, never raising ----------------------------------------
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Resp:
    """One synchronous request's answer (:func:`call`, :func:`call_stream`)."""
    status: int = 0  # 0: no HTTP status (timeout, connection error)
    body: Any = None  # parsed JSON, or text
    error: str = ""  # transport error
    timed_out: bool = False
    elapsed_s: float = 0.0
    chunks: int = 0  # streams: data chunks received
    events: list = field(default_factory=list)  # streams: parsed data chunks (last few kept)
    aborted_by_client: bool = False


def parse_body(text: str) -> Any:
    """JSON when it parses, else the text itself."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def check_loopback(url: str) -> None:
    """Refuse any server that is not on this host (the scripts send bad and aborted requests)."""
    host = urllib.parse.urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"{url}: only loopback servers are allowed (got host {host!r})")


def _request(url: str, payload: Any) -> urllib.request.Request:
    """GET when ``payload`` is None, else POST of raw bytes or of JSON (dict / list)."""
    if payload is None:
        data = None
    elif isinstance(payload, (bytes, bytearray)):
        data = bytes(payload)
    else:
        data = json.dumps(payload).encode()
    return urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                  headers={"Content-Type": "application/json"})


def http_json(url: str, payload: Any = None, timeout: float = 60.0):
    """GET (``payload`` None) or POST JSON; the decoded body (text when not JSON). Raises as
    ``urllib.request.urlopen`` does (``HTTPError`` for 4xx/5xx, ``URLError``, timeouts)."""
    with urllib.request.urlopen(_request(url, payload), timeout=timeout) as resp:
        return parse_body(resp.read().decode())


def call(url: str, payload: Any = None, timeout: float = 30.0) -> Resp:
    """GET (payload None) or POST JSON (dict/list) or raw bytes; 4xx/5xx, timeouts and
    connection errors are returned in the :class:`Resp`, never raised."""
    t0 = time.time()
    r = Resp()
    try:
        with urllib.request.urlopen(_request(url, payload), timeout=timeout) as resp:
            r.status, r.body = resp.status, parse_body(resp.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        r.status = exc.code
        try:
            r.body = parse_body(exc.read().decode(errors="replace"))
        except Exception:  # noqa: BLE001
            r.body = ""
    except (socket.timeout, TimeoutError) as exc:
        r.timed_out, r.error = True, f"timeout after {timeout}s ({exc})"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (socket.timeout, TimeoutError)):
            r.timed_out, r.error = True, f"timeout after {timeout}s"
        else:
            r.error = f"URLError: {exc.reason}"
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        r.error = f"{type(exc).__name__}: {exc}"
    r.elapsed_s = round(time.time() - t0, 3)
    return r


def call_stream(url: str, payload: dict, timeout: float = 30.0,
                abort_after: int | None = None, keep: int = 3) -> Resp:
    """POST with ``stream: true`` and read the SSE lines; ``abort_after``: close the socket
    after that many data chunks (a client walking away mid-stream). ``body``: the error event
    if one came, else the last event; ``events``: the last ``keep`` events."""
    t0 = time.time()
    u = urllib.parse.urlparse(url)
    r = Resp()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", u.path, body=json.dumps({**payload, "stream": True}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        r.status = resp.status
        if resp.status >= 400:
            r.body = parse_body(resp.read().decode(errors="replace"))
            return r
        while True:
            if time.time() - t0 > timeout:
                r.timed_out, r.error = True, f"stream exceeded {timeout}s"
                break
            raw = resp.fp.readline()
            if not raw:
                break
            data = sse_data(raw)
            if data is None:
                continue
            if data == SSE_DONE:
                break
            r.chunks += 1
            ev = parse_body(data.decode(errors="replace"))
            r.events = (r.events + [ev])[-keep:]
            if isinstance(ev, dict) and "error" in ev:
                r.body = ev
            if abort_after is not None and r.chunks >= abort_after:
                r.aborted_by_client = True
                break
        if r.body is None and r.events:
            r.body = r.events[-1]
    except (socket.timeout, TimeoutError) as exc:
        r.timed_out, r.error = True, f"timeout after {timeout}s ({exc})"
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        r.error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            if r.aborted_by_client and conn.sock is not None:
                conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()
        r.elapsed_s = round(time.time() - t0, 3)
    return r


# ---- outcome of a synchronous call (pure) ---------------------------------------------------
REJECTED = ("rejected", "rejected_in_body")


def _body_error(body: Any) -> tuple[bool, str]:
    """(is an error, message) for a 2xx body or stream event."""
    if not isinstance(body, dict):
        return False, ""
    if body.get("object") == "error":
        return True, str(body.get("message", ""))
    err = body.get("error")
    if err:
        return True, str(err.get("message", err) if isinstance(err, dict) else err)
    fr = (body.get("meta_info") or {}).get("finish_reason")
    if isinstance(fr, dict) and fr.get("type") == "abort":
        code = fr.get("status_code")
        if code is None or 400 <= int(code) < 500:
            return True, str(fr.get("message", ""))
    for ch in body.get("choices") or []:
        fr = ch.get("finish_reason") if isinstance(ch, dict) else None
        if fr == "abort":
            return True, str(ch.get("matched_stop") or body.get("message") or "aborted")
    return False, ""


def classify(r: Resp) -> str:
    """ok | rejected (HTTP 4xx) | rejected_in_body (2xx with an error / 400-abort) |
    server_error (5xx, or an abort with a 5xx code) | timeout | connection_error |
    client_abort (we closed the stream on purpose)."""
    if r.timed_out:
        return "timeout"
    if r.status == 0:
        return "connection_error"
    if r.status >= 500:
        return "server_error"
    if 400 <= r.status < 500:
        return "rejected"
    if isinstance(r.body, dict):
        fr = (r.body.get("meta_info") or {}).get("finish_reason")
        if isinstance(fr, dict) and fr.get("type") == "abort" and fr.get("status_code") \
                and int(fr["status_code"]) >= 500:
            return "server_error"
    is_err, _ = _body_error(r.body)
    if is_err:
        return "rejected_in_body"
    if r.aborted_by_client:
        return "client_abort"
    return "ok"


def error_message(r: Resp) -> str:
    """The transport error, else the server's reason (error body, 4xx abort, 422 detail)."""
    if r.error:
        return r.error
    body = r.body
    if isinstance(body, dict):
        is_err, msg = _body_error(body)
        if is_err:
            return msg
        if "detail" in body:  # FastAPI / pydantic 422
            return json.dumps(body["detail"])[:500]
        if "message" in body:
            return str(body["message"])
    return str(body)[:500] if body is not None else ""


# ---- synchronous calls around a run ---------------------------------------------------------
def served_model_id(base_url: str) -> str | None:
    """The first model id of ``/v1/models`` (what the OpenAI routes expect), or None."""
    r = call(base_url.rstrip("/") + "/v1/models", timeout=10)
    try:
        return r.body["data"][0]["id"]
    except (TypeError, KeyError, IndexError):
        return None


def loads_now(base_url: str) -> dict:
    """``/v1/loads`` summarized (running, waiting, used KV tokens), or {"error": message}."""
    r = call(base_url.rstrip("/") + "/v1/loads", timeout=10)
    return load_summary(r.body) if classify(r) == "ok" else {"error": error_message(r)}


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


def flush_cache_response(base_url: str, tries: int = 10, pause_s: float = 0.5,
                         timeout: float = 30.0) -> Resp:
    """POST ``/flush_cache`` until it answers 2xx (it refuses while requests are in flight);
    the last answer."""
    for i in range(tries):
        r = call(base_url.rstrip("/") + "/flush_cache", {}, timeout=timeout)
        if 200 <= r.status < 300:
            break
        logger.debug("flush_cache %s: %s %s", base_url, r.status, error_message(r))
        if i + 1 < tries:
            time.sleep(pause_s)
    return r


def flush_cache(base_url: str, tries: int = 10, pause_s: float = 0.5) -> bool:
    """``/flush_cache`` (radix cache and, in SGLang 0.5.17, the accept-length counters); it
    only succeeds on an idle server, so retry a few times. True once it succeeded."""
    return 200 <= flush_cache_response(base_url, tries, pause_s).status < 300


def load_summary(loads) -> dict:
    """The KV / queue fields of a ``/v1/loads`` answer (first data-parallel rank)."""
    items = loads.get("loads", loads) if isinstance(loads, dict) else loads
    first = items[0] if isinstance(items, list) and items else items
    if not isinstance(first, dict):
        return {"raw": str(loads)[:300]}
    return {k: first.get(k) for k in ("num_running_reqs", "num_waiting_reqs", "num_used_tokens",
                                      "token_usage", "max_total_num_tokens")}
