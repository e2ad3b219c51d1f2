"""A stand-in SGLang server process for the side-by-side harness test: takes the same command
line as ``python -m sglang.launch_server`` (it reads --port, --speculative-algorithm,
--speculative-draft-model-path, --speculative-eagle-topk and SGLANG_SIMULATE_ACC_LEN) and serves
/health, /generate (plain and streamed, input_ids, ignore_eos, top logprobs), /server_info and
/flush_cache. Every /generate body is appended to ``$FAKE_LOG_DIR/<kind>.jsonl``
(tree servers: ``domino_tree-<topk>x<nodes>.jsonl``).

The "model" is a Markov chain: next = f(last token). Planted greedy mismatches: ``domino``
takes the runner-up where the last token is even (AR's gap there is 0.0625: one bf16 ulp at
|logit| 12, a tie), ``domino_tree`` where it is odd (gap 3.0: not a tie); both only for prompts
whose id sum is a multiple of 3, once per request, from the 3rd token on.
"""

import json
import math
import os
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
from _http_fake import JsonHandler  # noqa: E402

EOS = 2


def nxt(last: int) -> int:
    return (last * 7 + 3) % 50 + 10


def gap_after(last: int) -> float:
    return 0.0625 if last % 2 == 0 else 3.0


def arg(flags, name, default=None):
    return flags[flags.index(name) + 1] if name in flags else default


def main():
    flags = sys.argv[1:]
    port = int(arg(flags, "--port"))
    algo = arg(flags, "--speculative-algorithm")
    draft = arg(flags, "--speculative-draft-model-path", "") or ""
    if algo is None:
        kind, tau = "ar", 1
    elif algo == "NGRAM":
        kind, tau = "ngram", 2
    elif "--speculative-eagle-topk" in flags:  # wider trees accept more (topk 2: 3, 4: 4)
        topk = int(arg(flags, "--speculative-eagle-topk"))
        kind, tau = "domino_tree", 2 + topk // 2
    elif "drafter-dflash" in draft:
        kind, tau = "dflash", 2
    else:
        kind, tau = "domino", 3
        if os.environ.get("DOMINO_ADAPTIVE") == "0":
            kind = "domino_fixed"
        else:  # what the adaptive worker logs every 256 rounds
            print('[fake] Domino adaptive summary: {"survival": [0.9, 0.8], "buckets": {"1": '
                  '{"current": 16, "cost_ms": {"1": 1.0, "16": 2.0}, "picks": {"16": 9}}}}',
                  flush=True)
    sim = os.environ.get("SGLANG_SIMULATE_ACC_LEN")
    if sim:
        tau = float(sim)
        kind += f"@sim{tau:g}"
    label = kind if kind != "domino_tree" else \
        f"{kind}-{topk}x{arg(flags, '--speculative-num-draft-tokens')}"
    log_path = os.path.join(os.environ.get("FAKE_LOG_DIR", "."), f"{label}.jsonl")
    lock = threading.Lock()
    step_s = 0.002 if algo is None else 0.003

    def generate(body):
        ids = body["input_ids"]
        sp = body.get("sampling_params") or {}
        n = int(sp.get("max_new_tokens", 16))
        out, last, deviated = [], ids[-1], False
        plant = sum(ids) % 3 == 0 and kind in ("domino", "domino_tree")
        for k in range(n):
            t = nxt(last)
            if plant and not deviated and k >= 2 and (
                    (kind == "domino" and last % 2 == 0) or (kind == "domino_tree" and last % 2)):
                t, deviated = t + 1, True
            if not sp.get("ignore_eos") and len(out) == 20 + sum(ids) % 5:
                t = EOS
            out.append(t)
            last = t
            if t == EOS:
                break
        time.sleep(step_s * math.ceil(len(out) / tau))
        trace = os.environ.get("DOMINO_ADAPTIVE_TRACE")
        if trace and kind == "domino":  # what the adaptive worker's RoundTrace writes
            with lock, open(trace, "a") as f:
                for r in range(math.ceil(len(out) / tau)):
                    f.write(json.dumps({"t": time.time(), "bs": 1, "w": 16 if r % 4 else 8,
                                        "ms": step_s * 1e3, "fwd_ms": step_s * 500,
                                        "steady": r % 4 > 0, "run": r % 4}) + "\n")
        finish = ({"type": "stop", "matched": EOS} if out[-1] == EOS and not sp.get("ignore_eos")
                  else {"type": "length", "length": n})
        meta = {"finish_reason": finish, "completion_tokens": len(out),
                "prompt_tokens": len(ids)}
        if algo is not None:
            meta["spec_verify_ct"] = math.ceil(len(out) / tau)
        if body.get("return_logprob"):
            t0 = nxt(ids[-1])
            meta["output_top_logprobs"] = [[[-0.3, t0, None],
                                            [-0.3 - gap_after(ids[-1]), t0 + 1, None],
                                            [-6.0, t0 + 2, None]]]
        return {"output_ids": out, "meta_info": meta}

    class H(JsonHandler):
        def _json(self, obj, code=200):
            self.send_json(obj, code)

        def do_GET(self):
            if self.path == "/server_info":
                st = {} if algo is None else {"avg_spec_accept_length": float(tau)}
                return self._json({"internal_states": [st]})
            return self._json({"ok": True})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/flush_cache":
                return self._json({"ok": True})
            with lock, open(log_path, "a") as f:
                f.write(json.dumps({k: body.get(k) for k in (
                    "input_ids", "sampling_params", "stream", "return_logprob")}) + "\n")
            res = generate(body)
            if not body.get("stream"):
                return self._json(res)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            ids = res["output_ids"]
            for j in range(1, len(ids)):
                self.wfile.write(b"data: " + json.dumps({"output_ids": ids[:j]}).encode()
                                 + b"\n\n")
            self.wfile.write(b"data: " + json.dumps(res).encode() + b"\n\ndata: [DONE]\n\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", port), H)
    httpd.daemon_threads = True
    print(f"fake {kind} on {port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
