"""Is a greedy mismatch a numerical near-tie or a logic error?

Plain decoding (one token per forward) and speculative verification (many tokens per forward)
run different kernels; in bf16/fp16 they round differently, and where the target's two best
logits are within the rounding step of the dtype at their magnitude the argmax can flip. A
lossless speculative server may then diverge from the plain server at that token, and only
there. A logic error shows up as a divergence where the plain server's top choice wins clearly.

:func:`tie_report` asks the plain server for the target's top log-probabilities at the first
differing position (the shared prefix as ``input_ids``, one greedy token, ``return_logprob``)
and takes ``gap = |logprob(a) - logprob(b)|``: log-probabilities differ from logits by one
constant per position, so this is the logit gap. With ``logits_fn`` it also takes the fp32
reference gap of the same two tokens; the mismatch is a tie when either gap is within the
dtype's rounding step at the logits' magnitude (``ulps`` units in the last place, default 1;
:func:`judge` says why the reference gap counts)::

    bf16 ulp(x) = 2 ** (floor(log2 |x|) - 7)     fp16 ulp(x) = 2 ** (floor(log2 |x|) - 10)

The magnitude is not in a log-probability, so it comes from ``logits_fn`` (e.g.
:func:`hf_logits_fn`: the target, or the tiny model an inflated target was built from, run on
the CPU in fp32). Without one, the legacy fixed thresholds ``TIE_EPS`` apply and the report says
``threshold_kind: "legacy_eps"``.

A first difference where one output is a prefix of the other is judged at the token the shorter
one stopped on (``finish_reason.matched``, e.g. EOS); without that it is a ``length`` mismatch,
never a tie.
"""

from __future__ import annotations

import json
import math
import urllib.request
from typing import Callable

# legacy fixed thresholds (no logit magnitude known): bf16 0.25 is one ulp for logits in
# [32, 64); kept for scripts that pass no logits_fn
TIE_EPS = {"bfloat16": 0.25, "float16": 0.05, "half": 0.05, "float32": 1e-3, "float": 1e-3}
# explicit mantissa bits of each dtype (the ulp at |x| in [2^e, 2^(e+1)) is 2^(e - bits))
MANTISSA_BITS = {"bfloat16": 7, "float16": 10, "half": 10, "float32": 23, "float": 23}

LogitsFn = Callable[[list, list], dict]  # (context ids, tokens) -> {token: logit}


def _dtype_name(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    if name not in MANTISSA_BITS:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(MANTISSA_BITS)}")
    return name


def ulp(x: float, dtype: str) -> float:
    """Spacing of ``dtype`` numbers at magnitude ``|x|`` (normal range)."""
    bits = MANTISSA_BITS[_dtype_name(dtype)]
    ax = abs(float(x))
    if ax == 0.0 or not math.isfinite(ax):
        raise ValueError(f"ulp of {x}: needs a finite non-zero magnitude")
    return 2.0 ** (math.floor(math.log2(ax)) - bits)


def top_logprobs_at(url: str, input_ids: list, k: int = 20, timeout: float = 60.0) -> dict:
    """token id -> log-probability of the plain server's next-token distribution (top k)."""
    body = json.dumps({"input_ids": list(input_ids),
                       "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
                       "return_logprob": True, "top_logprobs_num": k}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out = json.loads(resp.read().decode())
    if isinstance(out, list):
        out = out[0]
    tops = out["meta_info"]["output_top_logprobs"][0]
    return {int(t[1]): float(t[0]) for t in tops if t[0] is not None}


def first_difference(a: list, b: list) -> int:
    """First position where two token lists differ; the shorter length if one is a prefix of
    the other."""
    return next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _stop_token(finish) -> int | None:
    if isinstance(finish, dict) and finish.get("type") == "stop" \
            and isinstance(finish.get("matched"), int):
        return finish["matched"]
    return None


def tie_report(url: str, prompt_ids: list, ref: list, other: list, dtype: str,
               k: int = 20, timeout: float = 60.0, logits_fn: LogitsFn | None = None,
               ref_finish: dict | None = None, other_finish: dict | None = None,
               ulps: float = 1.0, other_url: str | None = None) -> dict:
    """First difference of two greedy outputs (ref = plain) and whether it is a near-tie.

    ``other_url``: the other system's server is asked the same question (its target's top
    log-probabilities at the shared prefix, computed as a prefill there): ``other_server_gap``
    (logprob of the plain token minus the other token; <= 0 means the other server's own
    target prefers its token) is recorded as evidence beside the verdict, not part of it."""
    dtype = _dtype_name(dtype)
    pos = first_difference(ref, other)
    a = ref[pos] if pos < len(ref) else _stop_token(ref_finish)
    b = other[pos] if pos < len(other) else _stop_token(other_finish)
    if a is None or b is None or a == b:  # a prefix with no known stop token there
        return {"position": pos, "kind": "length", "near_tie": False,
                "reason": "one output is a prefix of the other (no stop token to compare)"}
    context = list(prompt_ids) + list(ref[:pos])
    tops = top_logprobs_at(url, context, k, timeout)
    ranked = sorted(tops, key=tops.get, reverse=True)
    rep = {"position": pos, "kind": "token", "plain_token": a, "other_token": b,
           "plain_rank": ranked.index(a) if a in ranked else None,
           "other_rank": ranked.index(b) if b in ranked else None}
    if a not in tops or b not in tops:
        return {**rep, "logit_gap": None, "near_tie": False,
                "reason": f"a token is not in the plain server's top {k}"}
    gap = abs(tops[a] - tops[b])
    rep.update(logit_gap=round(gap, 6), signed_gap=round(tops[a] - tops[b], 6))
    if other_url:
        try:
            ot = top_logprobs_at(other_url, context, k, timeout)
            rep["other_server_gap"] = (round(ot[a] - ot[b], 6) if a in ot and b in ot
                                       else None)
        except Exception as exc:  # noqa: BLE001 - evidence only
            rep["other_server_gap"] = None
            rep["other_server_error"] = f"{type(exc).__name__}: {exc}"[:200]
    if logits_fn is None:
        eps = TIE_EPS[dtype]
        return {**rep, "threshold": eps, "threshold_kind": "legacy_eps",
                "near_tie": gap <= eps}
    ref_logits = logits_fn(context, [a, b])
    la, lb = ref_logits.get(a), ref_logits.get(b)
    if la is None or lb is None:
        return {**rep, "near_tie": False, "threshold_kind": "ulp",
                "reason": "reference logits lack one of the tokens"}
    mag = max(abs(la), abs(lb))
    step = ulp(mag, dtype)
    # a magnitude-only function (``gives_gap = False``, e.g. --logit-magnitude) has no gap
    ref_gap = round(abs(la - lb), 6) if getattr(logits_fn, "gives_gap", True) else None
    return judge({**rep, "logit_magnitude": round(mag, 4), "reference_gap": ref_gap,
                  "ulp": step, "gap_ulps": round(gap / step, 3)}, dtype, ulps)


def judge(rep: dict, dtype: str, ulps: float = 1.0) -> dict:
    """Set ``near_tie`` / ``tie_basis`` of a report that has ``logit_gap`` (the plain server's
    gap), ``reference_gap`` (fp32) and ``ulp``: a tie when either gap is within ``ulps`` ulps.

    The served gap is itself a rounded result: where the fp32 reference puts the two logits
    closer than the dtype's rounding step, the dtype cannot order them reliably, whatever gap
    the plain server's own rounding happened to produce (at Qwen3-8B shape, fp16, a 0.43-ulp
    exact gap was served as 2 ulps). A logic error shows as a divergence where the reference's
    winner wins clearly, which neither test excuses."""
    thr = ulps * rep["ulp"]
    served = rep["logit_gap"] <= thr * (1 + 1e-6)
    exact = rep.get("reference_gap") is not None and rep["reference_gap"] <= thr * (1 + 1e-6)
    basis = [b for b, ok in (("served gap", served), ("fp32 reference gap", exact)) if ok]
    return {**rep, "reference_gap_ulps": (None if rep.get("reference_gap") is None else
                                          round(rep["reference_gap"] / rep["ulp"], 3)),
            "threshold": thr, "threshold_kind": f"{ulps:g} ulp ({dtype})",
            "tie_basis": " and ".join(basis) or None, "near_tie": bool(basis)}


def tie_reports(url: str, prompts: list, ref: list, other: list, dtype: str, limit: int = 30,
                timeout: float = 60.0, logits_fn: LogitsFn | None = None,
                ref_finish: list | None = None, other_finish: list | None = None,
                ulps: float = 1.0, other_url: str | None = None) -> list:
    """:func:`tie_report` (plus ``prompt``: the index) for the first ``limit`` prompts whose
    outputs differ; None outputs (failed requests) are skipped, a failed lookup is recorded
    and judged as not a tie."""
    reports = []
    for i, (a, b) in enumerate(zip(ref, other)):
        if len(reports) >= limit:
            break
        if a is None or b is None or a == b:
            continue
        try:
            reports.append({"prompt": i, **tie_report(
                url, prompts[i], a, b, dtype, timeout=timeout, logits_fn=logits_fn,
                ref_finish=ref_finish[i] if ref_finish else None,
                other_finish=other_finish[i] if other_finish else None, ulps=ulps,
                other_url=other_url)})
        except Exception as exc:  # noqa: BLE001 - recorded, judged as not a tie
            reports.append({"prompt": i, "near_tie": False,
                            "error": f"{type(exc).__name__}: {exc}"})
    return reports


def summarize_ties(reports: list) -> dict:
    gaps = [abs(r["logit_gap"]) for r in reports if r.get("logit_gap") is not None]
    ulps = [r["gap_ulps"] for r in reports if r.get("gap_ulps") is not None]
    ref = [r["reference_gap_ulps"] for r in reports if r.get("reference_gap_ulps") is not None]
    return {"analysed": len(reports), "near_ties": sum(bool(r.get("near_tie")) for r in reports),
            "max_gap": max(gaps) if gaps else None,
            "max_gap_ulps": max(ulps) if ulps else None,
            "max_reference_gap_ulps": max(ref) if ref else None,
            "all_near_ties": all(r.get("near_tie") for r in reports)}


def hf_logits_fn(model_dir: str) -> LogitsFn:
    """Next-token logits of a Transformers checkpoint on the CPU in fp32, for the magnitude of
    the two logits at a first difference. For an inflated target (docs/INFLATION.md) pass the
    tiny model it was built from: its logits over the real vocabulary are the same."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size

    @torch.no_grad()
    def fn(context: list, tokens: list) -> dict:
        logits = model(torch.tensor([list(context)])).logits[0, -1]
        return {int(t): float(logits[t]) for t in tokens if 0 <= int(t) < vocab}

    return fn
