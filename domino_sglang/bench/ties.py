"""Is a greedy mismatch a numerical near-tie or a logic error?

Plain decoding (one token per forward) and speculative verification (many tokens per forward)
run different kernels; in bf16 they round differently, and where the target's two best logits
are within a few rounding steps the argmax can flip. A lossless speculative server may then
diverge from the plain server at that token, and only there. A logic error shows up as a
divergence where the plain server's top choice wins clearly, or where the speculative token is
not the runner-up.

:func:`tie_report` asks the plain server for the target's top log-probabilities at the first
differing position (the shared prefix as ``input_ids``, one greedy token, ``return_logprob``)
and reports the gap between the two tokens. Log-probabilities differ from logits by one
constant per position, so the gap is the logit gap.
"""

from __future__ import annotations

import json
import urllib.request

# largest logit gap called a near-tie, by server dtype: bf16 has 8 significant bits (spacing
# 0.125 for logits in [16, 32)), fp16 11 bits; fp32 kernels still differ by summation order
TIE_EPS = {"bfloat16": 0.25, "float16": 0.05, "half": 0.05, "float32": 1e-3, "float": 1e-3}


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


def tie_report(url: str, prompt_ids: list, ref: list, other: list, dtype: str,
               k: int = 20, timeout: float = 60.0) -> dict:
    """First difference of two greedy outputs (ref = plain) and the target's logit gap there."""
    pos = first_difference(ref, other)
    if pos == min(len(ref), len(other)):  # one output is a prefix of the other: stop / length
        return {"position": pos, "kind": "length", "near_tie": False}
    tops = top_logprobs_at(url, list(prompt_ids) + list(ref[:pos]), k, timeout)
    a, b = ref[pos], other[pos]
    ranked = sorted(tops, key=tops.get, reverse=True)
    gap = tops[a] - tops[b] if a in tops and b in tops else None
    eps = TIE_EPS.get(str(dtype).replace("torch.", ""), 0.25)
    return {"position": pos, "kind": "token", "plain_token": a, "other_token": b,
            "plain_rank": ranked.index(a) if a in ranked else None,
            "other_rank": ranked.index(b) if b in ranked else None,
            "logit_gap": None if gap is None else round(gap, 5), "tie_eps": eps,
            "near_tie": gap is not None and abs(gap) <= eps}


def tie_reports(url: str, prompts: list, ref: list, other: list, dtype: str, limit: int = 30,
                timeout: float = 60.0) -> list:
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
            reports.append({"prompt": i, **tie_report(url, prompts[i], a, b, dtype,
                                                      timeout=timeout)})
        except Exception as exc:  # noqa: BLE001 - recorded, judged as not a tie
            reports.append({"prompt": i, "near_tie": False,
                            "error": f"{type(exc).__name__}: {exc}"})
    return reports


def summarize_ties(reports: list) -> dict:
    gaps = [r["logit_gap"] for r in reports if r.get("logit_gap") is not None]
    return {"analysed": len(reports), "near_ties": sum(bool(r.get("near_tie")) for r in reports),
            "max_gap": max(gaps) if gaps else None,
            "all_near_ties": all(r.get("near_tie") for r in reports)}
