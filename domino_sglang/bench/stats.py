"""Small statistics over benchmark repeats: median, spread, ratios with spread.

A throughput measured ``r`` times is reported as its median and a spread (min/max over the
repeats, or p20/p80 once there are enough of them); a ratio of two such measurements (Domino
over AR) as the ratio of the medians and the range of every repeat-by-repeat ratio, printed as
``1.45x [1.41-1.49]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def _clean(values) -> list[float]:
    out = [float(v) for v in values if v is not None]
    if any(math.isnan(v) for v in out):
        raise ValueError(f"values contain NaN: {out}")
    return out


def median(values) -> float | None:
    xs = sorted(_clean(values))
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def percentile(values, q: float) -> float | None:
    """Linear-interpolated percentile, ``q`` in [0, 100] (numpy's default method)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q}: must be in [0, 100]")
    xs = sorted(_clean(values))
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    n: int
    median: float | None
    lo: float | None  # min, or p20 with >= 5 values
    hi: float | None  # max, or p80
    spread: str  # "min-max" or "p20-p80"

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values, p20_p80_from: int = 5) -> Summary:
    """Median and spread: min/max for fewer than ``p20_p80_from`` values, else p20/p80."""
    xs = _clean(values)
    if not xs:
        return Summary(0, None, None, None, "none")
    if len(xs) >= p20_p80_from:
        return Summary(len(xs), median(xs), percentile(xs, 20), percentile(xs, 80), "p20-p80")
    return Summary(len(xs), median(xs), min(xs), max(xs), "min-max")


def ratio(num, den) -> dict:
    """``median(num) / median(den)`` with the range of every ``num_i / den_j``.

    All pairs (not only same-index pairs), so the spread is the honest worst case of what two
    repeats of each system could have shown. Empty or zero denominators give ``None`` fields."""
    a, b = _clean(num), _clean(den)
    ma, mb = median(a), median(b)
    if not a or not b or not mb:
        return {"ratio": None, "lo": None, "hi": None, "n_num": len(a), "n_den": len(b)}
    pairs = [x / y for x in a for y in b if y]
    return {"ratio": ma / mb, "lo": min(pairs), "hi": max(pairs), "n_num": len(a),
            "n_den": len(b)}


def fmt_ratio(r: dict | None, digits: int = 2) -> str:
    """``1.45x [1.41-1.49]``; ``-`` when there is no ratio."""
    if not r or r.get("ratio") is None:
        return "-"
    return f"{r['ratio']:.{digits}f}x [{r['lo']:.{digits}f}-{r['hi']:.{digits}f}]"


def fmt_summary(s: Summary | dict | None, digits: int = 1) -> str:
    """``812.3 [790.1-820.4]``; ``-`` when empty."""
    if s is None:
        return "-"
    d = s.as_dict() if isinstance(s, Summary) else s
    if d.get("median") is None:
        return "-"
    return f"{d['median']:.{digits}f} [{d['lo']:.{digits}f}-{d['hi']:.{digits}f}]"


def paired_tau_ratio(num_pairs, den_pairs, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Ratio of two pooled acceptance lengths measured on the same prompts, with a paired
    bootstrap interval.

    ``num_pairs`` / ``den_pairs``: per prompt ``(tokens, rounds)`` of two drafters, in the same
    prompt order (a prompt's tokens may differ between them at T > 0). tau = sum(tokens) /
    sum(rounds); the interval resamples prompts with replacement (the same prompts for both,
    so prompt difficulty cancels) and takes the ``level`` percentile range of the resampled
    ratios. It covers the prompt sample only, not the training run's own randomness."""
    import random

    a, b = [tuple(map(float, p)) for p in num_pairs], [tuple(map(float, p)) for p in den_pairs]
    if len(a) != len(b):
        raise ValueError(f"paired_tau_ratio: {len(a)} prompts against {len(b)}: the two "
                         "measurements must cover the same prompts")
    if not a:
        return {"ratio": None, "lo": None, "hi": None, "n": 0, "n_boot": n_boot}

    def tau_ratio(idx) -> float | None:
        ta, ra = sum(a[i][0] for i in idx), sum(a[i][1] for i in idx)
        tb, rb = sum(b[i][0] for i in idx), sum(b[i][1] for i in idx)
        return (ta / ra) / (tb / rb) if ra and rb and tb else None

    n = len(a)
    rng = random.Random(seed)
    boots = [r for r in (tau_ratio([rng.randrange(n) for _ in range(n)])
                         for _ in range(n_boot)) if r is not None]
    tail = (1 - level) / 2 * 100
    return {"ratio": tau_ratio(range(n)), "lo": percentile(boots, tail),
            "hi": percentile(boots, 100 - tail), "n": n, "n_boot": n_boot, "level": level}
