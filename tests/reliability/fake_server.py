"""A loopback stand-in for an SGLang server (just enough of /generate, the OpenAI routes,
/v1/loads, /flush_cache) for the reliability and soak scripts' CPU tests."""

import json
import math
import random
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from _http_fake import JsonHandler

PROBS = {0: 0.4, 1: 0.25, 2: 0.15, 3: 0.1, 4: 0.06, 5: 0.04}  # the "target" at every position


def _draw(rng):
    u, cum = rng.random(), 0.0
    for t, p in PROBS.items():
        cum += p
        if u < cum:
            return t
    return 5


class FakeSGLang:
    def __init__(self, domino: bool = True, hang_s: float = 0.0):
        self.domino, self.hang_s = domino, hang_s
        self.rng = random.Random(7)
        self.lock = threading.Lock()
        outer = self

        class H(JsonHandler):
            def _json(self, code, obj):
                self.send_json(obj, code)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._json(200, {"data": [{"id": "fake-model"}]})
                if self.path == "/v1/loads":
                    return self._json(200, {"loads": [{"num_running_reqs": 0,
                                                       "num_waiting_reqs": 0,
                                                       "num_used_tokens": 0}]})
                return self._json(200, {"ok": True})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._json(400, {"error": {"message": "invalid JSON body"}})
                if self.path == "/flush_cache":
                    return self._json(200, {"ok": True})
                return outer.handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _error(self, h, stream, msg):
        if stream:
            h.send_response(200)
            h.end_headers()
            h.wfile.write(b"data: " + json.dumps({"error": {"message": msg, "code": 400}})
                          .encode() + b"\n\ndata: [DONE]\n\n")
            return None
        return h._json(400, {"object": "error", "message": msg, "code": 400})

    def handle(self, h, body):
        if self.hang_s:
            time.sleep(self.hang_s)
        stream = bool(body.get("stream"))
        sp = body.get("sampling_params") or body
        temp = sp.get("temperature", 1.0)
        if not isinstance(temp, (int, float)) or temp < 0:
            return self._error(h, stream, f"temperature must be non-negative, got {temp}")
        if h.path == "/generate":
            if self.domino and body.get("return_logprob"):
                return self._error(h, stream, "DFLASH does not support return_logprob yet.")
            ids = body.get("input_ids") or [1]
            n = sp.get("max_new_tokens", 16)
            with self.lock:
                out = ([(sum(ids) + k) % 50 for k in range(n)] if temp == 0
                       else [_draw(self.rng) for _ in range(n)])
            meta = {"finish_reason": {"type": "length", "length": n}}
            if body.get("return_logprob"):
                meta["output_top_logprobs"] = [[[math.log(p), t, None]
                                                for t, p in PROBS.items()]] * n
            text = '{"answer": "yes", "score": 3}' if sp.get("json_schema") else "x" * n
            res = {"text": text, "output_ids": out, "meta_info": meta}
        else:
            content = '{"answer": "no", "score": 1}'
            res = {"choices": [{"index": i, "message": {"content": content}, "text": content,
                                "finish_reason": "stop"} for i in range(body.get("n", 1))]}
        if not stream:
            return h._json(200, res)
        h.send_response(200)
        h.end_headers()
        try:
            for k in range(5):
                h.wfile.write(b"data: " + json.dumps(res).encode() + b"\n\n")
                h.wfile.flush()
                time.sleep(0.01)
            h.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


class FakeServer:
    """A stand-in for ``domino_sglang.bench.servers.Server`` (same constructor) for the GPU
    scripts' CPU runs: a :class:`FakeSGLang` on loopback, a Domino one unless named "plain";
    no process (``proc`` None)."""

    def __init__(self, name, port, cmd, log_path, env=None):
        self.name, self.cmd, self.env = name, cmd, env
        self.fake = FakeSGLang(domino=name != "plain")
        self.url, self.ready_s, self.proc = self.fake.url, 0.0, None
        self.log_path = Path(log_path)

    def start(self):
        self.log_path.write_text("fake\n")

    def wait_ready(self, timeout):
        return True

    def stop(self):
        self.fake.close()
