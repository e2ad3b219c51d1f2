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
                 "all_near_ties": False}
    assert summarize_ties([])["all_near_ties"]
