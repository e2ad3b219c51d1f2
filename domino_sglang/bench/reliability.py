"""The request table of the reliability and soak runs (Issue 7): every row of
``docs/bad_inputs.md`` as a :class:`BadCase` (endpoint, payload builder, the documented
behaviour, what a rejection message must name), how one answer is judged, the JSON schema of the
constrained requests and its check, and the tiny pair the scripts run on by default.

Requests go out through :mod:`domino_sglang.bench.client` (``call`` / ``call_stream``) and are
classified there (``classify``, ``error_message``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from .client import REJECTED, Resp, call, classify, error_message
from .systems import TINY

DEFAULT_TARGET = TINY / "target"
DEFAULT_DRAFT = TINY / "drafter-domino"
DEFAULT_PROMPTS = TINY / "heldout_prompts.jsonl"


# ---- the bad requests -----------------------------------------------------------------------
@dataclass
class BadCase:
    name: str
    endpoint: str  # "/generate", "/v1/completions", "/v1/chat/completions"
    build: Callable[[dict], Any]  # ctx -> payload (dict, or raw bytes)
    expect: str  # "reject" | "accept" | "either"
    match: tuple = ()  # a rejection message must contain one of these (lower case); () = any
    behavior: str = ""  # the documented behavior (docs/bad_inputs.md)
    stream: bool = False
    check: Callable[[Any], tuple] | None = None  # accepted body -> (ok, note)


def _gen(ctx, **sp):
    return {"input_ids": ctx["prompt_ids"], "sampling_params": {"max_new_tokens": 8,
                                                                "temperature": 0.0, **sp}}


def _chat(ctx, **kw):
    return {"model": ctx["model"], "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8, "temperature": 0.0, **kw}


def _cmpl(ctx, **kw):
    return {"model": ctx["model"], "prompt": "Hello, my name is", "max_tokens": 8,
            "temperature": 0.0, **kw}


def _n_choices(n):
    def check(body):
        ch = body.get("choices") if isinstance(body, dict) else None
        ok = isinstance(ch, list) and len(ch) == n
        return ok, f"{len(ch) if isinstance(ch, list) else None} choices"
    return check


def _has_choices(body):
    ch = body.get("choices") if isinstance(body, dict) else None
    return isinstance(ch, list) and len(ch) >= 1, "choices present"


def _has_output(body):
    ok = isinstance(body, dict) and ("text" in body or "output_ids" in body)
    return ok, "output present"


SCHEMA = {"type": "object",
          "properties": {"answer": {"type": "string", "enum": ["yes", "no", "maybe"]},
                         "score": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["answer", "score"], "additionalProperties": False}


def json_output_ok(text: str | None, finish: Any) -> tuple[bool, str]:
    """A JSON-schema-constrained completion: if it stopped, it parses and fits SCHEMA; a
    'length' stop is accepted (the grammar keeps the prefix valid; the model ran out)."""
    if text is None:
        return False, "no text"
    ftype = finish.get("type") if isinstance(finish, dict) else finish
    if ftype == "length":
        return True, "length stop (prefix only)"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return False, f"not JSON: {exc}: {text[:80]!r}"
    ok = (isinstance(obj, dict) and obj.get("answer") in ("yes", "no", "maybe")
          and isinstance(obj.get("score"), int) and 0 <= obj["score"] <= 9
          and set(obj) == {"answer", "score"})
    return ok, "fits schema" if ok else f"violates schema: {text[:80]!r}"


def _chat_json_check(body):
    try:
        ch = body["choices"][0]
        return json_output_ok(ch["message"]["content"], ch.get("finish_reason"))
    except (KeyError, IndexError, TypeError) as exc:
        return False, f"unexpected body: {exc}"


BAD_REQUESTS: list[BadCase] = [
    BadCase("temperature_negative", "/generate", lambda c: _gen(c, temperature=-0.5), "reject",
            ("temperature",), "400: temperature must be a non-negative finite number"),
    BadCase("temperature_not_a_number", "/v1/completions",
            lambda c: _cmpl(c, temperature="hot"), "reject", (),
            "400/422: request validation names the field"),
    BadCase("temperature_negative_stream", "/v1/chat/completions",
            lambda c: _chat(c, temperature=-1.0), "reject", ("temperature",),
            "4xx, or an error event in the stream", stream=True),
    BadCase("top_p_zero", "/generate", lambda c: _gen(c, temperature=0.7, top_p=0.0), "reject",
            ("top_p",), "400: top_p must be in (0, 1]"),
    BadCase("top_p_above_one", "/v1/chat/completions",
            lambda c: _chat(c, temperature=0.7, top_p=1.5), "reject", ("top_p",),
            "400: top_p must be in (0, 1]"),
    BadCase("top_k_zero", "/generate", lambda c: _gen(c, temperature=0.7, top_k=0), "reject",
            ("top_k",), "400: top_k must be -1 or >= 1"),
    BadCase("min_p_above_one", "/generate", lambda c: _gen(c, temperature=0.7, min_p=2.0),
            "reject", ("min_p",), "400: min_p must be in [0, 1]"),
    BadCase("frequency_penalty_out_of_range", "/v1/completions",
            lambda c: _cmpl(c, frequency_penalty=5.0), "reject", ("frequency_penalty", "penalty"),
            "400: frequency_penalty must be in [-2, 2]"),
    BadCase("max_tokens_beyond_context", "/v1/completions",
            lambda c: _cmpl(c, max_tokens=c["context_len"] * 50), "reject",
            ("context", "max", "token"), "400: requested token count exceeds the context length"),
    BadCase("max_new_tokens_negative", "/generate", lambda c: _gen(c, max_new_tokens=-1),
            "reject", ("max_new_tokens",), "400: max_new_tokens must be at least 0"),
    BadCase("min_new_tokens_above_max", "/generate",
            lambda c: _gen(c, max_new_tokens=4, min_new_tokens=8), "reject",
            ("min_new_tokens",), "400: min_new_tokens must be in [0, max_new_tokens]"),
    BadCase("max_tokens_zero", "/v1/completions", lambda c: _cmpl(c, max_tokens=0), "either",
            (), "accepted with an empty completion, or 400", check=_has_choices),
    BadCase("prompt_longer_than_context", "/generate",
            lambda c: {"input_ids": c["long_ids"], "sampling_params": {"max_new_tokens": 4,
                                                                        "temperature": 0.0}},
            "reject", ("context", "longer"), "400: the input is longer than the context length"),
    BadCase("empty_prompt_completions", "/v1/completions", lambda c: _cmpl(c, prompt=""),
            "reject", ("empty",), "400: prompt cannot be empty"),
    BadCase("empty_input_ids_generate", "/generate",
            lambda c: {"input_ids": [], "sampling_params": {"max_new_tokens": 4,
                                                            "temperature": 0.0}},
            "either", (), "400, or accepted; never a crash"),
    BadCase("empty_messages_chat", "/v1/chat/completions", lambda c: _chat(c, messages=[]),
            "reject", ("empty", "messages"), "400: messages cannot be empty"),
    BadCase("token_id_out_of_vocab", "/generate",
            lambda c: {"input_ids": c["prompt_ids"][:4] + [c["vocab_size"] + 12345],
                       "sampling_params": {"max_new_tokens": 4, "temperature": 0.0}},
            "reject", ("vocab", "range", "invalid", "token"),
            "400: input token id outside the vocabulary"),
    BadCase("stop_not_a_string", "/v1/completions", lambda c: _cmpl(c, stop=123), "reject", (),
            "400/422: stop must be a string or a list of strings"),
    BadCase("stop_empty_string", "/v1/completions", lambda c: _cmpl(c, stop=[""]), "either", (),
            "accepted (an empty stop string never matches) or 400", check=_has_choices),
    BadCase("stop_many_long_strings", "/v1/completions",
            lambda c: _cmpl(c, stop=["x" * 200 + str(i) for i in range(64)]), "either", (),
            "accepted (SGLang has no stop-count limit) or 400", check=_has_choices),
    BadCase("n_greater_than_one", "/v1/chat/completions", lambda c: _chat(c, n=2), "either", (),
            "accepted: 2 choices (parallel sampling), or 400", check=_n_choices(2)),
    BadCase("logprobs_completions", "/v1/completions", lambda c: _cmpl(c, logprobs=5), "reject",
            ("logprob",), "400: DFLASH-family speculative decoding does not support "
            "return_logprob (the plain server accepts it)"),
    BadCase("logprobs_chat", "/v1/chat/completions",
            lambda c: _chat(c, logprobs=True, top_logprobs=3), "reject", ("logprob",),
            "400: return_logprob not supported with domino"),
    BadCase("return_logprob_generate_stream", "/generate",
            lambda c: {**_gen(c), "return_logprob": True, "top_logprobs_num": 3}, "reject",
            ("logprob",), "error event (status 400) in the stream", stream=True),
    BadCase("return_hidden_states", "/generate", lambda c: {**_gen(c),
                                                            "return_hidden_states": True},
            "reject", ("hidden",), "400: the server is not configured to return hidden states"),
    BadCase("logit_bias_out_of_vocab", "/generate",
            lambda c: _gen(c, logit_bias={str(c["vocab_size"] + 7): 5.0}), "reject",
            ("logit_bias",), "400: logit_bias keys must be in [0, vocab)"),
    BadCase("json_schema_malformed", "/generate",
            lambda c: _gen(c, json_schema="{not json", max_new_tokens=16), "reject",
            ("grammar", "json", "schema", "invalid"),
            "400 / abort: the grammar backend cannot compile the schema"),
    BadCase("json_schema_and_regex", "/generate",
            lambda c: _gen(c, json_schema=json.dumps(SCHEMA), regex="[a-z]+"), "reject",
            ("only one",), "400: only one of json_schema, regex, ebnf, structural_tag"),
    BadCase("response_format_json_schema", "/v1/chat/completions",
            lambda c: _chat(c, max_tokens=64, response_format={
                "type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}),
            "accept", (), "accepted: output constrained to the schema", check=_chat_json_check),
    BadCase("malformed_json_body", "/generate", lambda c: b"{bad json", "reject", (),
            "400/422: the body is not JSON"),
]


def judge_bad_case(case: BadCase, r: Resp, follow_up_ok: bool) -> dict:
    """One row of the bad-request report: a rejection passes with a non-empty message that
    names the problem (``case.match``), an acceptance passes where the case allows it and its
    ``check`` holds; a timeout, a 5xx or a failed follow-up request never passes."""
    outcome = classify(r)
    msg = error_message(r)
    note = ""
    if outcome in REJECTED:
        ok = case.expect in ("reject", "either") and bool(msg.strip())
        if ok and case.match:
            ok = any(k in msg.lower() for k in case.match)
            note = "" if ok else f"message lacks any of {list(case.match)}"
        elif not msg.strip():
            note = "empty error message"
    elif outcome == "ok":
        ok = case.expect in ("accept", "either")
        if ok and case.check is not None:
            ok, note = case.check(r.body)
        elif not ok:
            note = "accepted, but a rejection was expected"
    else:  # timeout, 5xx, connection error: never acceptable
        ok, note = False, outcome
    if not follow_up_ok:
        ok, note = False, (note + "; " if note else "") + "the next normal request failed"
    return {"name": case.name, "endpoint": case.endpoint, "expect": case.expect,
            "outcome": outcome, "status": r.status, "message": msg[:300], "pass": ok,
            "note": note, "follow_up_ok": follow_up_ok, "elapsed_s": r.elapsed_s}


def normal_request_ok(url: str, ctx: dict, timeout: float) -> bool:
    """A short greedy ``/generate`` on ``ctx["prompt_ids"]`` succeeds (the server still serves)."""
    r = call(url + "/generate", _gen(ctx, max_new_tokens=4), timeout=timeout)
    return classify(r) == "ok" and _has_output(r.body)[0]


# ---- report -----------------------------------------------------------------------------------
def verdict_word(v: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "not measured"}[v]


def checks_markdown(checks: dict | None, error: str | None = None) -> list[str]:
    """The run error (if any) and the table of checks (PASS / FAIL / not measured)."""
    lines = [f"Run error: `{error}`", ""] if error else []
    lines += ["| check | result |", "| --- | --- |"]
    return lines + [f"| {k} | {verdict_word(v)} |" for k, v in (checks or {}).items()]
