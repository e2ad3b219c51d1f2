"""The load generator against a fake streaming OpenAI-compatible server on loopback."""

import asyncio
import csv
import json

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from _loopback import LoopbackApp, free_port  # noqa: E402

from domino_sglang.bench.load import main, percentiles  # noqa: E402

TOKENS_PER_REPLY = 7


class FakeServer:
    """Streams TOKENS_PER_REPLY chunks; every 5th request fails with HTTP 500."""

    def __init__(self):
        self.port = free_port()
        self.count = 0
        self.bodies = []

    async def completions(self, request):
        body = await request.json()
        self.bodies.append(body)
        self.count += 1
        if self.count % 5 == 0:
            return web.Response(status=500, text="boom")
        chat = request.path.endswith("chat/completions")
        if not body.get("stream"):
            return web.json_response({"choices": [{"text": "x"}],
                                      "usage": {"completion_tokens": TOKENS_PER_REPLY}})
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(TOKENS_PER_REPLY):
            choice = {"delta": {"content": f"t{i} "}} if chat else {"text": f"t{i} "}
            await resp.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            await asyncio.sleep(0.002)
        usage = {"choices": [], "usage": {"completion_tokens": TOKENS_PER_REPLY}}
        await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        return resp

    async def server_info(self, request):
        return web.json_response({"internal_states": [{"avg_spec_accept_length": 3.5}]})

    def start(self):
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/server_info", self.server_info)
        self.app = LoopbackApp(app, self.port).start()
        return self

    def stop(self):
        self.app.stop()


@pytest.fixture()
def server():
    s = FakeServer().start()
    yield s
    s.stop()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_closed_loop_sweep_writes_json_csv_png(server, tmp_path, api):
    rc = main(["--base-url", f"http://127.0.0.1:{server.port}", "--label", "fake", "--api", api,
               "--prompts", "random", "--num-prompts", "8", "--concurrency", "1", "3",
               "--requests-per-level", "10", "--warmup", "0", "--out", str(tmp_path),
               "--no-progress", "--max-tokens", "16"])
    assert rc == 0
    res = json.loads((tmp_path / "fake.json").read_text())
    assert [lv["level"] for lv in res["levels"]] == [1, 3]
    for lv in res["levels"]:
        assert lv["completed"] + lv["errors"] == 10
        assert lv["errors"] == 2 and "HTTP 500" in lv["error_samples"][0]
        assert lv["output_tokens"] == lv["completed"] * TOKENS_PER_REPLY
        assert lv["accept_length"] == 3.5
        assert 0 < lv["ttft_ms"]["p50"] <= lv["latency_ms"]["p50"]
        assert lv["itl_ms"]["p50"] > 0 and lv["tpot_ms"]["p50"] > 0
    assert server.bodies[0]["max_tokens"] == 16 and server.bodies[0]["stream"] is True
    rows = list(csv.reader((tmp_path / "fake.csv").open()))
    assert len(rows) == 3 and rows[0][0] == "label"
    assert (tmp_path / "throughput_latency.png").stat().st_size > 1000


def test_open_loop_is_bounded_by_count(server, tmp_path):
    rc = main(["--base-url", f"http://127.0.0.1:{server.port}", "--label", "open",
               "--prompts", "random", "--request-rate", "inf", "50", "--requests-per-level", "6",
               "--warmup", "0", "--out", str(tmp_path), "--no-progress", "--no-stream"])
    assert rc == 0
    res = json.loads((tmp_path / "open.json").read_text())
    assert [lv["mode"] for lv in res["levels"]] == ["open", "open"]
    assert all(lv["completed"] + lv["errors"] == 6 for lv in res["levels"])


def test_percentiles():
    p = percentiles([0.001 * i for i in range(1, 101)])
    assert p["p50"] == pytest.approx(50) and p["p99"] == pytest.approx(99)
    assert percentiles([])["p50"] is None
