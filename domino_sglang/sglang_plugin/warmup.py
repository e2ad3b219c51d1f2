"""The ``domino`` start-up warm-up, run through SGLang's ``--warmups`` registry before the
server listens (``http_server.lifespan`` awaits the custom warm-ups first).

Why: SGLang's own warm-up sends one greedy request, so kernels first used by other requests
compile while the first real ones wait: flashinfer's sampling kernels (JIT with nvcc, a minute
on a cold cache), Domino's sampled-verify Triton kernels, penalizers, the grammar backend's
mask kernels. The session-8 soak on an H100 saw every request of its first ~60 s time out
(128 of 52463) while the server reported none running, and none after. The warm-up sends
greedy, sampled (temperature, top-k, top-p, min-p, repetition penalty), streamed and, when a
grammar backend is on, JSON-schema requests, a few of each at once so that batched rounds run,
and logs how long it took.

Default on for ``--speculative-algorithm domino`` (``validate_server_args`` sets ``--warmups
domino`` when no ``--warmups`` is given); SGLang's ``--skip-server-warmup`` or an explicit
``--warmups`` list leave it out. A failing warm-up, or one not finished within ``TIMEOUT_S``,
logs a warning and the server starts anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

logger = logging.getLogger(__name__)

WARMUP_NAME = "domino"
TIMEOUT_S = 600.0  # a warm-up that has not finished by then is given up (the server starts)
_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"},
                                            "n": {"type": "integer"}},
           "required": ["name", "n"]}


def warmup_requests(vocab_size: int, grammar: bool, per_kind: int = 4, prompt_len: int = 24,
                    new_tokens: int = 48, seed: int = 0) -> list[dict]:
    """The warm-up's requests: ``{"kind", "input_ids", "sampling_params", "stream"}``.
    SGLang-free."""
    if vocab_size < 16:
        raise ValueError(f"vocab_size {vocab_size}: too small for a warm-up prompt")
    rng = random.Random(seed)
    sampled = [{"temperature": 0.7, "top_p": 0.9, "top_k": 20},
               {"temperature": 1.0, "min_p": 0.05},
               {"temperature": 0.8, "top_p": 0.95, "repetition_penalty": 1.1},
               {"temperature": 1.3, "top_k": 5, "frequency_penalty": 0.2}]
    kinds = [("greedy", {"temperature": 0.0}, False)]
    kinds += [("sampled", sampled[i % len(sampled)], False) for i in range(per_kind)]
    kinds += [("stream", {"temperature": 0.8}, True)]
    if grammar:
        kinds += [("json", {"temperature": 0.0, "json_schema": json.dumps(_SCHEMA)}, False)]
    out = []
    for kind, params, stream in kinds:
        copies = per_kind if kind == "greedy" else 1
        for _ in range(copies):
            ids = [rng.randrange(1, vocab_size - 1) for _ in range(prompt_len)]
            out.append({"kind": kind, "input_ids": ids, "stream": stream,
                        "sampling_params": {"max_new_tokens": new_tokens, **params}})
    return out


async def domino_warmup(disaggregation_mode: str, tokenizer_manager) -> None:
    """SGLang's custom warm-up signature. Never raises."""
    if disaggregation_mode not in (None, "null"):
        logger.info("domino warm-up skipped (disaggregation mode %s)", disaggregation_mode)
        return
    t0 = time.time()
    try:
        from sglang.srt.managers.io_struct import GenerateReqInput

        vocab = int(tokenizer_manager.model_config.vocab_size)
        sa = tokenizer_manager.server_args
        # JSON-schema requests need a grammar backend and a tokenizer
        grammar = (str(getattr(sa, "grammar_backend", None) or "none") != "none"
                   and not getattr(sa, "skip_tokenizer_init", False))
        reqs = warmup_requests(vocab, grammar)

        async def run(r: dict) -> None:
            req = GenerateReqInput(input_ids=r["input_ids"], stream=r["stream"],
                                   sampling_params=dict(r["sampling_params"]))
            async for _ in tokenizer_manager.generate_request(req, None):
                pass

        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(run(r) for r in reqs), return_exceptions=True), TIMEOUT_S)
        except asyncio.TimeoutError:
            raise RuntimeError(f"not finished after {TIMEOUT_S:.0f} s (its requests are "
                               "cancelled)") from None
        failed = [(r["kind"], o) for r, o in zip(reqs, outcomes) if isinstance(o, BaseException)]
        if failed:
            kind, exc = failed[0]
            raise RuntimeError(f"{len(failed)} of {len(reqs)} requests failed, first a {kind} "
                               f"one: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a warm-up must never stop the server
        logger.warning("domino warm-up failed after %.1f s (%s: %s); the server starts anyway, "
                       "its first requests may wait for kernel compiles", time.time() - t0,
                       type(exc).__name__, exc)
        return
    kinds = sorted({r["kind"] for r in reqs})
    logger.info("domino warm-up: %d requests (%s) in %.1f s (first-use kernel compiles "
                "included; --skip-server-warmup leaves it out)", len(reqs), ", ".join(kinds),
                time.time() - t0)


def register_warmup() -> bool:
    """Add ``domino`` to SGLang's warm-up registry (idempotent). False where this SGLang has no
    registry."""
    try:
        from sglang.srt.entrypoints import warmup as sglang_warmup
    except Exception:  # noqa: BLE001 - no SGLang / another layout
        return False
    registry = getattr(sglang_warmup, "_warmup_registry", None)
    if registry is not None and WARMUP_NAME in registry:
        return True
    sglang_warmup.warmup(WARMUP_NAME)(domino_warmup)
    return True


def default_warmups(server_args) -> str | None:
    """Set ``--warmups domino`` unless warm-ups were chosen (``--warmups``) or skipped
    (``--skip-server-warmup``); returns the value set, or None."""
    if getattr(server_args, "skip_server_warmup", False):
        return None
    if getattr(server_args, "warmups", None) is not None:
        return None
    server_args.warmups = WARMUP_NAME
    return WARMUP_NAME
