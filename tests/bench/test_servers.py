"""The server-process helper shared by the GPU scripts, with a stand-in server on loopback."""

import socket
import sys

from domino_sglang.bench.servers import Server, sglang_command, start_all

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
