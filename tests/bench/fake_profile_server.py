"""A stand-in SGLang server for the profile_round test: takes the ``sglang.launch_server`` command
line (reads --port and --speculative-draft-model-path) and serves /health, /generate (1 ms per
token until ``max_new_tokens`` or an abort), /v1/loads (running = requests in flight),
/abort_request (abort_all), /start_profile and /stop_profile.

/start_profile writes ``<output_dir>/<profile_id>-TP-0.trace.json.gz`` like SGLang 0.5.17, in two
halves 0.3 s apart (the script must wait for a whole file): ``num_steps + 1`` rounds of 1 ms, each
a ``scheduler.run_batch`` span with ``step[TARGET_VERIFY bs=<running>]``, one graph launch of a
300 us attention kernel, and for the Domino server one eager 200 us ``_gru_kernel`` on top.
"""

import gzip
import json
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
from _http_fake import JsonHandler  # noqa: E402
from pathlib import Path


def arg(flags, name, default=None):
    return flags[flags.index(name) + 1] if name in flags else default


def fake_trace(steps: int, bs: int, domino: bool) -> dict:
    cpu = {"pid": 7, "tid": 7}
    ev = []
    for i in range(steps + 1):
        t = 1000.0 * i
        c = 10 * i
        ev += [{"ph": "X", "cat": "user_annotation", "name": "scheduler.run_batch", "ts": t,
                "dur": 600, **cpu},
               {"ph": "X", "cat": "user_annotation", "name": f"step[TARGET_VERIFY bs={bs}]",
                "ts": t + 10, "dur": 300, **cpu},
               {"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": t + 20,
                "dur": 10, "args": {"correlation": c}, **cpu},
               {"ph": "X", "cat": "kernel", "name": "_fwd_kernel_stage1", "ts": t + 50,
                "dur": 300, "pid": 0, "tid": 7, "args": {"correlation": c}}]
        if domino:
            ev += [{"ph": "X", "cat": "cuda_driver", "name": "cuLaunchKernel", "ts": t + 400,
                    "dur": 5, "args": {"correlation": c + 1}, **cpu},
                   {"ph": "X", "cat": "kernel", "name": "_gru_kernel", "ts": t + 450,
                    "dur": 200, "pid": 0, "tid": 7, "args": {"correlation": c + 1}}]
    return {"traceEvents": ev}


def main():
    flags = sys.argv[1:]
    port = int(arg(flags, "--port"))
    domino = "drafter-domino" in (arg(flags, "--speculative-draft-model-path", "") or "")
    lock = threading.Lock()
    flight: dict[int, threading.Event] = {}
    counter = [0]

    def generate(body):
        ev = threading.Event()
        with lock:
            counter[0] += 1
            rid = counter[0]
            flight[rid] = ev
        n = body["sampling_params"]["max_new_tokens"]
        done = 0
        while done < n and not ev.is_set():
            time.sleep(0.001)
            done += 1
        with lock:
            flight.pop(rid, None)
        finish = {"type": "abort", "message": "aborted"} if ev.is_set() else \
            {"type": "length", "length": n}
        return {"output_ids": [5] * done, "meta_info": {
            "finish_reason": finish, "completion_tokens": done, "spec_verify_ct": done // 2}}

    def write_trace(body, bs):
        time.sleep(0.2)
        out = Path(body["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        blob = gzip.compress(json.dumps(fake_trace(body["num_steps"], bs, domino)).encode())
        path = out / f"{body['profile_id']}-TP-0.trace.json.gz"
        with open(path, "wb") as f:
            f.write(blob[: len(blob) // 2])
            f.flush()
            time.sleep(0.3)
            f.write(blob[len(blob) // 2:])

    class H(JsonHandler):
        def send(self, obj, code=200):
            self.send_json(obj, code)

        def do_GET(self):
            if self.path == "/health":
                self.send({})
            elif self.path.startswith("/v1/loads"):
                with lock:
                    n = len(flight)
                self.send({"loads": [{"num_running_reqs": n, "num_waiting_reqs": 0,
                                      "num_used_tokens": 10 * n,
                                      "speculative": {"accept_length": 2.0}}]})
            else:
                self.send({"error": "not found"}, 404)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))
                              or b"{}")
            if self.path == "/generate":
                self.send(generate(body))
            elif self.path == "/abort_request":
                with lock:
                    for ev in flight.values():
                        ev.set()
                self.send("")
            elif self.path == "/start_profile":
                with lock:
                    bs = len(flight)
                threading.Thread(target=write_trace, args=(body, bs), daemon=True).start()
                self.send("Start profiling.\n")
            elif self.path == "/stop_profile":
                self.send("Stop profiling.\n")
            else:
                self.send({"error": "not found"}, 404)

    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


if __name__ == "__main__":
    main()
