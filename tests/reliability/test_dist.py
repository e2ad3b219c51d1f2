"""The distribution tests of the sampled-losslessness checks (domino_sglang.bench.dist): chi-square
p-values, goodness of fit, the randomized PIT, parsing SGLang's top logprobs."""

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_server import PROBS  # noqa: E402

from domino_sglang.bench.dist import (chi2_sf, chi_square_gof, parse_top_logprobs,  # noqa: E402
                                      pit_value, uniformity_test)


def test_chi2_sf_known_values():
    assert chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-5)
    assert chi2_sf(18.307038, 10) == pytest.approx(0.05, abs=1e-5)
    assert chi2_sf(9.0, 9) == pytest.approx(0.4372, abs=1e-3)
    assert chi2_sf(200.0, 5) < 1e-30 and chi2_sf(0.0, 3) == 1.0


def test_chi_square_gof_accepts_the_right_distribution_and_rejects_a_wrong_one():
    rng = random.Random(0)
    toks, ps = list(PROBS), list(PROBS.values())
    probs = dict(PROBS)
    good = {}
    for t in rng.choices(toks, weights=ps, k=2000):
        good[t] = good.get(t, 0) + 1
    assert chi_square_gof(good, probs)["p_value"] > 1e-3
    skew = {}
    for t in rng.choices(toks, weights=[0.3, 0.3, 0.15, 0.1, 0.1, 0.05], k=2000):
        skew[t] = skew.get(t, 0) + 1
    assert chi_square_gof(skew, probs)["p_value"] < 1e-6
    # a token the target gives ~no mass shows up: 'other' bin blows up
    assert chi_square_gof({**good, 999: 30}, probs)["p_value"] < 1e-6
    assert chi_square_gof({}, probs)["p_value"] is None


def test_pit_is_uniform_under_the_null_only():
    rng = random.Random(1)
    probs = {0: 0.5, 1: 0.3, 2: 0.15}  # 0.05 outside the top-k
    toks = [0, 1, 2, 77]
    us = [pit_value(probs, t, rng.random())
          for t in rng.choices(toks, weights=[0.5, 0.3, 0.15, 0.05], k=4000)]
    assert uniformity_test(us)["p_value"] > 1e-3
    us_bad = [pit_value(probs, t, rng.random())
              for t in rng.choices(toks, weights=[0.7, 0.2, 0.05, 0.05], k=4000)]
    assert uniformity_test(us_bad)["p_value"] < 1e-6


def test_parse_top_logprobs():
    entry = [[math.log(0.5), 7, None], (math.log(0.25), 3, "a"),
             {"logprob": math.log(0.125), "token_id": 9}, None]
    assert parse_top_logprobs(entry) == pytest.approx({7: 0.5, 3: 0.25, 9: 0.125})
