"""Near-tie analysis of greedy mismatches against a fake plain server (loopback)."""

import sys
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loopback import LoopbackApp, free_port  # noqa: E402

from domino_sglang.bench.ties import summarize_ties, tie_report  # noqa: E402

# the fake target: after prefix [..., 7] tokens 11 / 12 are within 0.1; after [..., 8] token 21
# wins by 3.0 over 22
TOPS = {7: [[-0.70, 11, None], [-0.80, 12, None], [-4.0, 13, None]],
        8: [[-0.05, 21, None], [-3.05, 22, None]]}


@pytest.fixture(scope="module")
def plain_url():
    seen = []

    async def generate(request):
        body = await request.json()
        assert body["return_logprob"] and body["sampling_params"]["max_new_tokens"] == 1
        seen.append(body["input_ids"])
        tops = TOPS[body["input_ids"][-1]]
        return web.json_response({"output_ids": [tops[0][1]],
                                  "meta_info": {"output_top_logprobs": [tops]}})

    app = web.Application()
    app.router.add_post("/generate", generate)
    srv = LoopbackApp(app, free_port()).start()
    yield f"http://127.0.0.1:{srv.port}", seen
    srv.stop()


def test_near_tie_and_clear_win(plain_url):
    url, seen = plain_url
    tie = tie_report(url, [1, 2], [5, 7, 11, 4], [5, 7, 12, 9], "bfloat16")
    assert seen[-1] == [1, 2, 5, 7]  # prompt + the shared prefix
    assert tie["position"] == 2 and tie["plain_token"] == 11 and tie["other_token"] == 12
    assert tie["logit_gap"] == pytest.approx(0.1) and tie["other_rank"] == 1
    assert tie["near_tie"]
    assert not tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "float32")["near_tie"]  # 0.1>eps
    clear = tie_report(url, [3], [8, 21], [8, 22], "bfloat16")
    assert clear["logit_gap"] == pytest.approx(3.0) and not clear["near_tie"]
    missing = tie_report(url, [3], [8, 21], [8, 99], "bfloat16")  # not in the top k
    assert missing["other_rank"] is None and not missing["near_tie"]
    length = tie_report(url, [3], [8, 21], [8, 21, 5], "bfloat16")
    assert length["kind"] == "length" and not length["near_tie"]
    s = summarize_ties([tie, clear])
    assert s == {"analysed": 2, "near_ties": 1, "max_gap": pytest.approx(3.0),
                 "max_gap_ulps": None, "max_reference_gap_ulps": None, "all_near_ties": False}
    assert summarize_ties([])["all_near_ties"]


def test_dtype_aware_threshold(plain_url):
    """gap 0.1 is within one bf16 ulp at |logit| 20 (0.125) but not at |logit| 12 (0.0625);
    the sign of the gap does not matter (the runner-up may be the plain server's token)."""
    url, _ = plain_url
    # the fp32 reference agrees with the served gap (0.1): only the served gap decides
    def at(mag):
        return lambda ctx, toks: {t: mag - 0.1 * i for i, t in enumerate(toks)}
    big = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16", logits_fn=at(20.0))
    assert big["near_tie"] and big["ulp"] == 0.125 and big["gap_ulps"] == pytest.approx(0.8)
    small = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16", logits_fn=at(12.0))
    assert not small["near_tie"] and small["threshold_kind"] == "1 ulp (bfloat16)"
    swapped = tie_report(url, [1, 2], [5, 7, 12], [5, 7, 11], "bfloat16", logits_fn=at(20.0))
    assert swapped["signed_gap"] < 0 and swapped["logit_gap"] == pytest.approx(0.1)
    assert swapped["near_tie"]
    fp16 = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "float16", logits_fn=at(20.0))
    assert not fp16["near_tie"] and fp16["ulp"] == 2 ** -6


def test_stop_token_at_a_prefix(plain_url):
    """One output stops on EOS (not in output_ids) where the other goes on: judged at the
    stop token from finish_reason.matched."""
    url, _ = plain_url
    rep = tie_report(url, [1, 2], [5, 7], [5, 7, 12], "bfloat16",
                     ref_finish={"type": "stop", "matched": 11}, other_finish=None,
                     logits_fn=lambda c, t: {x: 20.0 for x in t})
    assert rep["kind"] == "token" and rep["plain_token"] == 11 and rep["near_tie"]
    no_stop = tie_report(url, [1, 2], [5, 7], [5, 7, 12], "bfloat16")
    assert no_stop["kind"] == "length" and not no_stop["near_tie"]


def test_reference_gap_within_rounding_is_a_tie(plain_url):
    """The served gap (0.1) is over one bf16 ulp at |logit| 12 (0.0625), but the fp32 reference
    puts the two logits 0.01 apart: the dtype cannot order them, a tie on the reference's
    basis. A reference gap of 1.0 leaves the same served gap a non-tie (a logic error)."""
    url, _ = plain_url
    close = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16",
                       logits_fn=lambda c, t: {11: 12.0, 12: 11.99})
    assert close["near_tie"] and close["tie_basis"] == "fp32 reference gap"
    assert close["gap_ulps"] == pytest.approx(1.6) and close["reference_gap_ulps"] < 1
    far = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16",
                     logits_fn=lambda c, t: {11: 12.0, 12: 11.0})
    assert not far["near_tie"] and far["tie_basis"] is None
    both = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16",
                      logits_fn=lambda c, t: {11: 20.0, 12: 19.99})
    assert both["near_tie"] and both["tie_basis"] == "served gap and fp32 reference gap"
    magnitude_only = lambda c, t: {x: 12.0 for x in t}  # noqa: E731
    magnitude_only.gives_gap = False  # as --logit-magnitude: no reference gap, served decides
    none = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16", logits_fn=magnitude_only)
    assert none["reference_gap"] is None and not none["near_tie"]
    s = summarize_ties([close, far])
    assert s["near_ties"] == 1 and not s["all_near_ties"]
    assert s["max_reference_gap_ulps"] == pytest.approx(16.0)


def test_other_server_gap_is_recorded(plain_url):
    """other_url: the other server's own top logprobs at the shared prefix, as evidence (here
    the same fake server, so its gap is the plain server's signed gap); a server that fails the
    lookup is recorded, not fatal, and never changes the verdict."""
    url, _ = plain_url
    rep = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16", other_url=url)
    assert rep["other_server_gap"] == pytest.approx(0.1) and rep["near_tie"]
    bad = tie_report(url, [1, 2], [5, 7, 11], [5, 7, 12], "bfloat16",
                     other_url="http://127.0.0.1:9")
    assert bad["other_server_gap"] is None and "other_server_error" in bad and bad["near_tie"]
