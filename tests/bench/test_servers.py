"""The server-process helper shared by the GPU scripts, with a stand-in server on loopback."""

import socket
import sys

from domino_sglang.bench.servers import (Server, scan_log, server_flags, sglang_command,
                                         spec_flags, start_all, stop_all)

HEALTH = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a): pass
print("up", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_wait_stop(tmp_path):
    ports = [_port(), _port()]
    servers = {f"s{i}": Server(f"s{i}", p, [sys.executable, "-c", HEALTH, str(p)],
                               tmp_path / f"s{i}.log") for i, p in enumerate(ports)}
    try:
        assert start_all(servers, timeout=30) == {"s0": True, "s1": True}
        assert all(s.ready_s is not None for s in servers.values())
        assert servers["s0"].dump_scheduler_stacks() == []  # no scheduler process here
    finally:
        for s in servers.values():
            s.stop()
    assert all(s.proc.poll() is not None for s in servers.values())
    assert "up" in servers["s0"].log_tail()
    assert servers["s1"].log_path.read_text().startswith(sys.executable)


def test_dead_server_is_not_ready(tmp_path):
    s = Server("dead", _port(), [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "d.log")
    s.start()
    assert s.wait_ready(10) is False
    s.stop()


def test_sglang_command():
    cmd = sglang_command(31000, ["--model-path", "m"])
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    assert cmd[cmd.index("--port") + 1] == "31000" and cmd[-2:] == ["--model-path", "m"]


def _flag(flags, name, n=1):
    i = flags.index(name)
    return flags[i + 1:i + 1 + n]


def test_server_flags():
    flags = server_flags("T", "bfloat16", 0.3, 1000, 7, "--tp-size 2")
    assert _flag(flags, "--model-path") == ["T"] and _flag(flags, "--dtype") == ["bfloat16"]
    assert _flag(flags, "--attention-backend") == ["triton"]
    assert _flag(flags, "--sampling-backend") == ["pytorch"]
    assert _flag(flags, "--cuda-graph-bs", 4) == ["1", "2", "4", "8"]
    assert _flag(flags, "--mem-fraction-static") == ["0.3"]
    assert _flag(flags, "--max-total-tokens") == ["1000"]
    assert _flag(flags, "--random-seed") == ["7"] and flags[-2:] == ["--tp-size", "2"]
    assert "--disable-prefill-cuda-graph" in flags and "--skip-tokenizer-init" not in flags
    more = server_flags("T", "float16", 0.5, 64, 0, ["--x", "a b"], cuda_graph_bs=(1, 16),
                        decode_log_interval=40)
    assert _flag(more, "--cuda-graph-bs", 3) == ["1", "16", "--mem-fraction-static"]
    assert _flag(more, "--decode-log-interval") == ["40"] and more[-2:] == ["--x", "a b"]


def test_spec_flags():
    assert spec_flags("domino", "D", 16) == [
        "--speculative-algorithm", "domino", "--speculative-draft-model-path", "D",
        "--speculative-num-draft-tokens", "16"]
    assert "--speculative-num-draft-tokens" not in spec_flags("DFLASH", "D", None)


def test_scan_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("ok\nTraceback (most recent call last):\n  boom\nScheduler hit an exception: x\n"
                   "CUDA error: an illegal memory access\nTraceback (most recent call last):\n")
    assert scan_log(log) == {"readable": True, "tracebacks": 2, "scheduler_exceptions": 1,
                             "cuda_errors": 1}
    assert scan_log(tmp_path / "missing.log") == {"readable": False}


# ignores SIGTERM: only SIGKILL stops it
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "print('up', flush=True); time.sleep(120)"


def test_stop_all_shares_one_grace_period(tmp_path):
    """Three servers that ignore SIGTERM stop within one shared grace period (then SIGKILL),
    not one each; a server that honours SIGTERM stops at once."""
    import time

    stubborn = [Server(f"x{i}", _port(), [sys.executable, "-c", STUBBORN], tmp_path / f"x{i}.log")
                for i in range(3)]
    polite = Server("p", _port(), [sys.executable, "-c", "import time; time.sleep(120)"],
                    tmp_path / "p.log")
    for s in [*stubborn, polite]:
        s.start()
    time.sleep(1.0)  # let the handlers be installed
    t0 = time.time()
    stop_all([*stubborn, polite], grace_s=1.5)
    took = time.time() - t0
    assert all(s.proc.poll() is not None for s in [*stubborn, polite])
    assert took < 1.5 * 2, took  # serially it would be >= 3 x 1.5 s
    assert polite.proc.returncode == -15 and stubborn[0].proc.returncode == -9
