"""benchmarks/serving_commands_gpu.py runs the docs' serving commands as written: each of its
commands must occur verbatim in the doc it names, and the filling-in must only touch the
placeholders."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "serving_commands_gpu.py"
spec = importlib.util.spec_from_file_location("serving_commands_gpu", SCRIPT)
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


def _doc_commands(doc: str) -> str:
    """The doc's bash blocks, backslash-newline continuations joined (as bash does), runs of
    spaces collapsed."""
    text = (ROOT / doc).read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    joined = re.sub(r"\\\n\s*", "", "\n".join(blocks))
    return re.sub(r"[ \t]+", " ", joined)


@pytest.mark.parametrize("cid,doc,kind,cmd", sc.COMMANDS, ids=[c[0] for c in sc.COMMANDS])
def test_command_is_in_the_doc_verbatim(cid, doc, kind, cmd):
    assert cmd in _doc_commands(doc), f"{cid}: not found in {doc} as written: {cmd}"


def test_filling_touches_only_placeholders(tmp_path):
    argv = sc.filled("python launch/serve.py --model Qwen/Qwen3-8B --draft DRAFT --port 30000",
                     tmp_path)
    assert argv == [sys.executable, "launch/serve.py", "--model", str(tmp_path / "target"),
                    "--draft", str(tmp_path / "drafter-domino"), "--port", "30000"]
    assert sc.port_of(argv) == 30000 and sc.port_of(["x"]) == 30000


def test_list_and_bad_id():
    out = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.count("\n") == len(sc.COMMANDS)
    bad = subprocess.run([sys.executable, str(SCRIPT), "--only", "nope"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "--only" in bad.stderr


_FAKE = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({"data": [{"id": "m"}]} if self.path == "/v1/models" else {})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/chat/completions":
            self.reply({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})
        else:
            self.reply({"text": " Paris", "meta_info": {}})

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def test_server_verdict_is_recorded_before_the_server_is_stopped(tmp_path):
    """The verdict reaches ``on_probed`` while the server still runs (a time limit hit during
    SGLang's shutdown, as on the H100 on 2026-12-07, then cannot lose it)."""
    import socket

    fake = tmp_path / "fake.py"
    fake.write_text(_FAKE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = []

    def probed(rec):
        alive = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True).returncode == 0
        seen.append((rec, alive))

    args = sc.build_parser().parse_args(["--startup-timeout", "30"])
    rec = sc.run_one("x", "server", [sys.executable, str(fake), str(port), "--port", str(port)],
                     tmp_path / "x.log", args, keep=False, on_probed=probed)
    assert rec["ok"] is True and len(seen) == 1
    early, alive = seen[0]
    assert early["ok"] is True and early["probe"]["chat"]["text"] == "hi" and alive
