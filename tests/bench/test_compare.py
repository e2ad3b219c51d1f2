"""benchmarks/compare.py on CPU: server commands, dry run, table math with fake levels, the
programmatic load sweep + tau probe against a fake server on loopback, the tokenizer choice."""

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "benchmarks" / "compare.py")
compare = importlib.util.module_from_spec(spec)
sys.modules["bench_compare"] = compare
spec.loader.exec_module(compare)


def _args(*extra):
    return compare.build_parser().parse_args(list(extra))


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_server_commands():
    args = _args()
    cmds = {n: compare.server_command(n, 40000 + i, args) for i, n in enumerate(compare.SYSTEMS)}
    for n, cmd in cmds.items():
        assert cmd[1:3] == ["-m", "sglang.launch_server"]
        assert _flag(cmd, "--dtype") == "bfloat16"
        assert _flag(cmd, "--attention-backend") == "triton"
        assert _flag(cmd, "--sampling-backend") == "pytorch"
        assert "--disable-prefill-cuda-graph" in cmd
        assert _flag(cmd, "--mem-fraction-static") == "0.15"
        assert _flag(cmd, "--max-total-tokens") == "131072"
        assert _flag(cmd, "--model-path").endswith("assets/domino-tiny/target")
        assert "--skip-tokenizer-init" not in cmd  # chat API: the server loads the tokenizer
    ports = [_flag(c, "--port") for c in cmds.values()]
    assert len(set(ports)) == len(ports)
    assert "--speculative-algorithm" not in cmds["ar"]
    assert _flag(cmds["ngram"], "--speculative-algorithm") == "NGRAM"
    assert "--speculative-draft-model-path" not in cmds["ngram"]
    assert _flag(cmds["domino"], "--speculative-algorithm") == "domino"
    assert _flag(cmds["domino"], "--speculative-draft-model-path").endswith("drafter-domino")
    # plain DFlash through our worker (honours shift_label) and SGLang's stock DFLASH
    assert _flag(cmds["dflash"], "--speculative-algorithm") == "domino"
    assert _flag(cmds["dflash"], "--speculative-draft-model-path").endswith("drafter-dflash")
    assert _flag(cmds["dflash_stock"], "--speculative-algorithm") == "DFLASH"
    assert _flag(cmds["dflash_stock"], "--speculative-draft-model-path").endswith(
        "drafter-dflash")
    for n in ("domino", "dflash", "dflash_stock"):
        assert _flag(cmds[n], "--speculative-num-draft-tokens") == "16"
        assert Path(_flag(cmds[n], "--speculative-draft-model-path"), "config.json").is_file()
        assert "--grammar-backend" not in cmds[n] and compare.server_env(n, args) == {}
    # tree mode: same drafter, chosen by the server's environment; the plugin sets the verify
    # width itself (no --speculative-num-draft-tokens) and needs --grammar-backend none
    tree = cmds["domino_tree"]
    assert _flag(tree, "--speculative-algorithm") == "domino"
    assert _flag(tree, "--speculative-draft-model-path") == _flag(
        cmds["domino"], "--speculative-draft-model-path")
    assert "--speculative-num-draft-tokens" not in tree
    assert _flag(tree, "--grammar-backend") == "none"
    assert _flag(tree, "--attention-backend") == "triton"
    chain = compare.server_command("domino", 1, args)
    assert chain[-2:] == ["--speculative-num-draft-tokens", "16"]
    assert compare.server_command("domino_tree", 1, args) == chain[:-2] + [
        "--grammar-backend", "none"]
    assert compare.server_env("domino_tree", args) == {"DOMINO_TREE_TOPK": "4",
                                                       "DOMINO_TREE_BUDGET": "32"}
    assert compare.server_env("domino_tree", _args("--tree-topk", "2", "--tree-budget", "24")) \
        == {"DOMINO_TREE_TOPK": "2", "DOMINO_TREE_BUDGET": "24"}
    cbs = cmds["ar"][cmds["ar"].index("--cuda-graph-bs") + 1:][:6]
    assert cbs == ["1", "2", "4", "8", "16", "32"]
    extra = compare.server_command("ar", 1, _args("--extra-server-args", "--foo 1 --bar"))
    assert extra[-3:] == ["--foo", "1", "--bar"]


@pytest.mark.sglang
def test_server_commands_parse_with_sglang():
    import argparse

    from sglang.srt.server_args import ServerArgs

    p = argparse.ArgumentParser()
    ServerArgs.add_cli_args(p)
    args = _args()
    for i, n in enumerate(compare.SYSTEMS):
        ns = p.parse_args(compare.server_command(n, 40000 + i, args)[3:])
        assert ns.dtype == "bfloat16" and ns.port == 40000 + i
        # --cuda-graph-bs is a deprecated alias of --cuda-graph-bs-decode in 0.5.17
        assert [1, 2, 4, 8, 16, 32] in vars(ns).values()


def test_dry_run_prints_plan(capsys):
    assert compare.main(["--dry-run", "--levels", "1", "4"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert list(plan["servers"]) == compare.DEFAULT_ORDER
    assert "domino_tree" in compare.DEFAULT_ORDER and "not_available" not in plan
    tree = plan["servers"]["domino_tree"]
    assert tree["env"] == {"DOMINO_TREE_TOPK": "4", "DOMINO_TREE_BUDGET": "32"}
    assert tree["command"].startswith("DOMINO_TREE_TOPK=4 DOMINO_TREE_BUDGET=32 ")
    assert "--grammar-backend none" in tree["command"]
    assert "--speculative-num-draft-tokens" not in tree["command"]
    assert plan["servers"]["domino"]["env"] == {}
    assert not plan["servers"]["domino"]["command"].startswith("DOMINO_")
    assert compare.main(["--dry-run", "--tree-topk", "8", "--tree-budget", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["servers"]["domino_tree"]["env"] == {
        "DOMINO_TREE_TOPK": "8", "DOMINO_TREE_BUDGET": "64"}
    assert plan["requests_per_level"] == {"1": 16, "4": 16, "32": 128, "64": 256}


def test_load_namespace_is_the_load_parser():
    args = _args("--ignore-eos", "--max-tokens", "64")
    ns = compare.load_namespace(args, "http://x:1", "domino", 8)
    assert ns.concurrency == [8] and ns.requests_per_level == 32 and ns.max_tokens == 64
    assert ns.api == "chat" and ns.stream is True and ns.temperature == 0.0
    assert ns.ignore_eos is True and ns.progress is False and ns.label == "domino"
    assert ns.prompts.endswith("heldout_prompts.jsonl")


def _lv(level, tps, tpot=5.0, accept=None, completed=10, errors=0):
    p = lambda v: {"p50": v, "p90": v, "p99": v, "mean": v}  # noqa: E731
    return {"mode": "closed", "level": level, "completed": completed, "errors": errors,
            "duration_s": 1.0, "output_tokens": int(tps), "output_tokens_per_s": tps,
            "requests_per_s": 1.0, "ttft_ms": p(10.0), "tpot_ms": p(tpot), "itl_ms": p(1.0),
            "latency_ms": p(100.0), "accept_length": accept, "error_samples": []}


def test_table_math_with_fake_levels():
    res = {"ar": [_lv(1, 100.0), _lv(16, 1000.0)],
           "domino": [_lv(1, 250.0, 2.0, 2.5), _lv(16, 1500.0, 4.0, 2.4)],
           "dflash": [_lv(1, 200.0, 2.5, 2.0), _lv(16, 1200.0, 4.5, 1.9)],
           "ngram": [_lv(1, 90.0), _lv(16, 0.0, completed=0, errors=4)],
           "dflash_stock": [_lv(1, 105.0)],
           "domino_tree": [_lv(1, 300.0, 1.5, 3.0)]}
    rows = compare.build_table(res, taus={"domino": 1.7, "dflash": 1.5, "domino_tree": 2.0})
    by = {(r["level"], r["system"]): r for r in rows}
    assert by[(1, "domino")]["x_vs_ar"] == 2.5 and by[(1, "domino")]["x_vs_dflash"] == 1.25
    assert by[(16, "domino")]["x_vs_ar"] == 1.5 and by[(16, "domino")]["x_vs_dflash"] == 1.25
    assert by[(1, "dflash")]["x_vs_dflash"] == 1.0 and by[(1, "ar")]["x_vs_ar"] == 1.0
    assert by[(1, "domino")]["tpot_p50_ms"] == 2.0
    assert by[(1, "domino")]["accept_length_server"] == 2.5
    assert by[(1, "domino")]["tau_probe"] == 1.7 and by[(1, "ar")]["tau_probe"] is None
    assert by[(16, "ngram")]["status"] == "failed" and by[(16, "ngram")]["x_vs_ar"] is None
    assert by[(16, "dflash_stock")]["status"] == "not run"
    # the tree is a measured system like the chain: ratios vs AR and vs DFlash, tau
    assert by[(1, "domino_tree")]["status"] == "ok"
    assert by[(1, "domino_tree")]["x_vs_ar"] == 3.0 and by[(1, "domino_tree")]["x_vs_dflash"] == 1.5
    assert by[(1, "domino_tree")]["tau_probe"] == 2.0
    assert by[(16, "domino_tree")]["status"] == "not run"
    # table order: ar, ngram, dflash_stock, dflash, domino, domino_tree
    assert [r["system"] for r in rows if r["level"] == 1] == [
        "ar", "ngram", "dflash_stock", "dflash", "domino", "domino_tree"]
    meta = {"date": "2026-11-29", "device": "NVIDIA H200", "command": "python compare.py",
            "versions": {"sglang": "0.5.17", "torch": "2.11.0"}, "errors": {"x": "y"}}
    labels = {n: compare.SYSTEMS[n]["label"] for n in res}
    md = compare.markdown(meta, rows, labels)
    assert "| 1 | domino | 250.0 | 2.50x | 1.25x | 2.00 |" in md
    assert "| 1 | domino_tree | 300.0 | 3.00x | 1.50x | 1.50 |" in md
    assert "EXPERIMENTAL" in md
    assert "NVIDIA H200" in md and "0.5.17" in md and "python compare.py" in md
    assert "dflash (same backbone, our worker)" in md and "misreads shift_label" in md


def test_table_marks_a_server_that_failed_to_start():
    res = {"ar": [_lv(1, 100.0)], "domino": [_lv(1, 250.0)], "domino_tree": []}
    rows = compare.build_table(res, failed={"domino_tree": "last line: ValueError: a|b"})
    by = {(r["level"], r["system"]): r for r in rows}
    assert by[(1, "domino_tree")]["status"] == "failed to start"
    assert [r["system"] for r in rows] == ["ar", "domino", "domino_tree"]
    assert by[(1, "domino")]["x_vs_ar"] == 2.5
    md = compare.markdown({"errors": {"domino_tree_startup": "line 1\nValueError: x\n"}}, rows,
                          {})
    assert "| 1 | domino_tree | failed to start: last line: ValueError: a|b |" in md
    assert "```\nline 1\nValueError: x\n```" in md


# ---- loopback: the real load sweep (domino_sglang.bench.load) + tau probe --------------------
aiohttp = pytest.importorskip("aiohttp")
from _loopback import LoopbackApp, free_port  # noqa: E402


class _Fake:
    def __init__(self):
        self.port = free_port()
        self.chat_bodies = []

    async def chat(self, request):
        from aiohttp import web

        body = await request.json()
        self.chat_bodies.append(body)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"data: {json.dumps({'choices': [{'delta': {'content': 'a'}}]})}"
                             "\n\n".encode())
            await asyncio.sleep(0.001)
        tail = {"choices": [], "usage": {"completion_tokens": 5}}
        await resp.write(f"data: {json.dumps(tail)}\n\ndata: [DONE]\n\n".encode())
        return resp

    async def generate(self, request):
        from aiohttp import web

        body = await request.json()
        assert isinstance(body["input_ids"], list)
        return web.json_response({"output_ids": [5] * 10, "meta_info": {
            "completion_tokens": 10, "spec_verify_ct": 4}})

    async def info(self, request):
        from aiohttp import web

        return web.json_response({"internal_states": [{"avg_spec_accept_length": 2.5}]})

    def start(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/generate", self.generate)
        app.router.add_get("/server_info", self.info)
        self.app = LoopbackApp(app, self.port).start()
        return self

    def stop(self):
        self.app.stop()


def test_sweep_and_tau_probe_on_loopback(tmp_path):
    fake = _Fake().start()
    try:
        args = _args("--out-dir", str(tmp_path), "--min-requests", "6",
                     "--requests-per-slot", "1", "--warmup", "1", "--level-duration-s", "5")
        srv = compare.Server("domino", fake.port, ["true"], tmp_path)
        done, skipped = compare.sweep_levels(srv, [1, 2, 4], args, time.time() + 100)
        assert [lv["level"] for lv in done] == [1, 2, 4] and skipped == []
        assert all(lv["completed"] == 6 and lv["output_tokens"] == 30 for lv in done)
        assert done[0]["accept_length"] == 2.5
        # the prompts are the held-out texts, sent through the chat API
        assert fake.chat_bodies[0]["messages"][0]["role"] == "user"
        assert fake.chat_bodies[0]["temperature"] == 0.0
        # a deadline too close skips levels instead of overrunning
        done2, skipped2 = compare.sweep_levels(srv, [8], args, time.time() + 1)
        assert done2 == [] and skipped2 == [8]
        ids = compare.heldout_input_ids(compare.ASSETS / "heldout_prompts.jsonl", 4)
        tau = compare.tau_probe(srv.url, ids, 16, concurrency=2)
        assert tau == {"prompts": 4, "completion_tokens": 40, "verify_steps": 16, "tau": 2.5}
        compare.loadgen.write_outputs({"label": "domino", "levels": done}, tmp_path / "load")
        assert (tmp_path / "load" / "throughput_latency.png").stat().st_size > 1000
    finally:
        fake.stop()


@pytest.fixture
def keep_sigterm():
    import signal

    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


def test_main_keeps_measuring_when_the_tree_server_fails(tmp_path, monkeypatch, keep_sigterm):
    """main() with a domino_tree server that does not start: its rows say so (with the log's
    last line, the tail under Errors), it gets its DOMINO_TREE_* environment, and AR (a fake
    server on loopback) is still swept and probed."""
    fake = _Fake().start()
    started = {}

    class FakeServer(compare.Server):
        def start(self):
            started[self.name] = self.env
            self.log_path.write_text("boot\nValueError: [domino] tree refused\n")

        def wait_ready(self, timeout):
            self.ready_s = 0.0 if self.name == "ar" else None
            return self.name == "ar"

    monkeypatch.setattr(compare, "Server", FakeServer)
    try:
        rc = compare.main(["--out-dir", str(tmp_path), "--systems", "ar", "domino_tree",
                           "--base-port", str(fake.port), "--levels", "1", "--extra-levels",
                           "--min-requests", "2", "--warmup", "0", "--level-duration-s", "5",
                           "--tau-probe-prompts", "2", "--tree-topk", "3",
                           "--commit", "c0ffee1"])
    finally:
        fake.stop()
    assert rc == 1  # no domino chain results
    assert started["ar"] is None or "DOMINO_TREE_TOPK" not in started["ar"]
    assert started["domino_tree"]["DOMINO_TREE_TOPK"] == "3"
    assert started["domino_tree"]["DOMINO_TREE_BUDGET"] == "32"
    assert started["domino_tree"]["PATH"]  # a full environment, not only the extras
    out = json.loads((tmp_path / "compare.json").read_text())
    by = {r["system"]: r for r in out["rows"]}
    assert by["ar"]["status"] == "ok" and by["ar"]["completed"] == 4
    assert by["domino_tree"]["status"] == "failed to start"
    assert "tree refused" in by["domino_tree"]["note"]
    assert "tree refused" in out["meta"]["errors"]["domino_tree_startup"]
    assert out["meta"]["servers"]["domino_tree"].startswith("DOMINO_TREE_TOPK=3 ")
    md = (tmp_path / "compare.md").read_text()
    assert "| 1 | domino_tree | failed to start: " in md and "boot" in md
    # the harness's provenance (--commit honoured), also in the legacy keys
    assert out["meta"]["git"]["commit"] == "c0ffee1" and "- commit: c0ffee1" in md
    assert out["meta"]["versions"]["domino_sglang_commit"] == "c0ffee1"
    assert "--commit c0ffee1" in out["meta"]["command"] and out["meta"]["tau_probe"]["ar"]


def test_server_tokenizer_matches_training_template():
    """The servers run with the target's tokenizer (no --skip-tokenizer-init): SGLang's
    get_tokenizer + the ChatML template give the held-out prompts' training ids."""
    from sglang.srt.utils.hf_transformers_utils import get_tokenizer

    tok = get_tokenizer(str(compare.ASSETS / "target"))
    rows = [json.loads(x) for x in
            (compare.ASSETS / "heldout_prompts.jsonl").read_text().splitlines()[:10]]
    for r in rows:
        ids = tok.apply_chat_template([{"role": "user", "content": r["text"]}],
                                      add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if not isinstance(ids, list) else ids
        assert ids == r["input_ids"]
    assert tok.eos_token_id == 2
