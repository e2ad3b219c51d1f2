"""Distribution tests for sampled losslessness: chi-square goodness of fit and the randomized
probability-integral transform (PIT) of categorical draws, pure Python (no SciPy on the GPU host).

A sampled speculative decoder is lossless iff every emitted token ~ the target's distribution at
its prefix. ``pit_value`` maps each draw through that distribution to a value that is
Uniform(0, 1) exactly when the draw follows it; ``uniformity_test`` bins those values and
returns a chi-square p-value. ``chi_square_gof`` compares raw token counts with probabilities.
"""

from __future__ import annotations

import math
from typing import Any


def _gammainc_upper_reg(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a) (Numerical Recipes: series below a+1, else a continued
    fraction)."""
    if x <= 0:
        return 1.0
    lg = math.lgamma(a)
    if x < a + 1:
        term = s = 1.0 / a
        ap = a
        for _ in range(10000):
            ap += 1
            term *= x / ap
            s += term
            if abs(term) < abs(s) * 1e-15:
                break
        return max(0.0, 1.0 - s * math.exp(-x + a * math.log(x) - lg))
    b = x + 1 - a
    c = 1 / 1e-300
    d = 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - lg) * h)


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof)."""
    return _gammainc_upper_reg(dof / 2.0, x / 2.0)


def chi_square_gof(counts: dict, probs: dict, min_expected: float = 5.0) -> dict:
    """Goodness of fit of token counts to probabilities. Tokens with expected count <
    min_expected, tokens missing from probs and the probability mass outside probs are merged
    into one 'other' bin."""
    n = sum(counts.values())
    if n == 0:
        return {"n": 0, "stat": None, "dof": 0, "p_value": None, "bins": []}
    total_p = sum(probs.values())
    bins, other_p, other_obs = [], max(0.0, 1.0 - total_p), 0
    for tok, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        if n * p >= min_expected:
            bins.append((tok, counts.get(tok, 0), n * p))
        else:
            other_p += p
            other_obs += counts.get(tok, 0)
    other_obs += sum(c for t, c in counts.items() if t not in probs)
    if n * other_p >= min_expected or other_obs > 0:
        # an 'other' bin with ~0 expected but observations is a real failure: keep it, with a
        # small floor so the statistic stays finite
        bins.append(("other", other_obs, max(n * other_p, 1e-9)))
    stat = sum((o - e) ** 2 / e for _, o, e in bins)
    dof = max(1, len(bins) - 1)
    return {"n": n, "stat": round(stat, 3), "dof": dof, "p_value": chi2_sf(stat, dof),
            "bins": [{"token": t, "observed": o, "expected": round(e, 2)} for t, o, e in bins]}


def top_logprob_pairs(entry: Any) -> list[tuple[int, float]]:
    """One position of SGLang's ``output_top_logprobs`` (``[[logprob, token_id, text], ...]``,
    or dicts) -> [(token_id, logprob)], best first."""
    out = []
    for item in entry or []:
        if isinstance(item, dict):
            lp, tok = item.get("logprob"), item.get("token_id", item.get("id"))
        elif isinstance(item, (list, tuple)) and len(item) >= 2:
            lp, tok = item[0], item[1]
        else:
            continue
        if lp is None or tok is None:
            continue
        out.append((int(tok), float(lp)))
    return sorted(out, key=lambda t: -t[1])


def parse_top_logprobs(entry: Any) -> dict:
    """One position of ``output_top_logprobs`` -> {token_id: probability}."""
    return {t: math.exp(lp) for t, lp in top_logprob_pairs(entry)}


def pit_value(probs: dict, token: int, v: float) -> float:
    """Randomized probability-integral transform of a categorical draw: tokens ordered by
    descending probability, the rest of the mass last; u = F(before) + v * p(token).
    Uniform(0, 1) when token ~ probs."""
    order = sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))
    cum = 0.0
    for t, p in order:
        if t == token:
            return min(1.0, cum + v * p)
        cum += p
    rest = max(0.0, 1.0 - cum)
    return min(1.0, cum + v * rest)


def uniformity_test(us: list, bins: int = 10) -> dict:
    if not us:
        return {"n": 0, "stat": None, "dof": bins - 1, "p_value": None, "counts": []}
    counts = [0] * bins
    for u in us:
        counts[min(bins - 1, int(u * bins))] += 1
    e = len(us) / bins
    stat = sum((c - e) ** 2 / e for c in counts)
    return {"n": len(us), "stat": round(stat, 3), "dof": bins - 1,
            "p_value": chi2_sf(stat, bins - 1), "counts": counts}
