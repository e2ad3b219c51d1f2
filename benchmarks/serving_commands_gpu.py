"""Run the serving commands of README.md and launch/README.md as written, on the GPU host (#19).

Each command below is the documentation's text with only its placeholders filled in: ``TARGET``
/ ``DRAFT`` and the Hub ids ``Qwen/Qwen3-8B`` / ``Huang2020/Qwen3-8B-Domino-b16`` become the
trained tiny pair's folders (the GPU host has no network), and a leading ``python`` becomes this
interpreter. ``tests/bench/test_serving_commands.py`` checks that every command string here
occurs verbatim in the docs, so the two cannot drift apart.

Kinds: ``check`` runs to completion (exit 0, expected text in its output); ``server`` starts the
server, waits for ``/health``, then sends a chat completion and a greedy ``/generate`` (HTTP 200
and text back) and stops it; ``serve_detach`` runs the command with the doc's optional ``[--detach] [--log FILE]`` (exit 0 once
healthy, pid printed), sends the same requests, then stops the server unless ``--keep-last``
(the soak then attaches to it). Servers run one at a time, as written (SGLang's default memory
fraction takes most of the GPU), in the priority order below, within ``--time-budget-s``.

Usage (GPU host, after ``source benchmarks/gpu_preamble.sh``)::

    timeout -s TERM 560 python3 benchmarks/serving_commands_gpu.py --out-dir $OUT --commit SHA
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from domino_sglang.bench.client import http_json
from domino_sglang.bench.harness import Run, progress_printer, provenance_lines

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "assets" / "domino-tiny"
PLACEHOLDERS = {"Qwen/Qwen3-8B": "target", "Huang2020/Qwen3-8B-Domino-b16": "drafter-domino",
                "TARGET": "target", "DRAFT": "drafter-domino"}

# (id, doc file, kind, command as written: continuation lines joined with one space)
COMMANDS = [
    ("readme_print_command", "README.md", "check",
     "python launch/serve.py --model TARGET --draft DRAFT --print-command"),
    ("registration_check", "launch/README.md", "check",
     'python -c "from sglang.srt.plugins import load_plugins; load_plugins(); '
     'from sglang.srt.speculative.spec_info import SpeculativeAlgorithm as S; '
     "print(S.from_string('domino'))\""),
    ("readme_launch_server", "README.md", "server",
     "python -m sglang.launch_server --model-path TARGET "
     "--speculative-algorithm domino --speculative-draft-model-path DRAFT"),
    ("launch_tree_server", "launch/README.md", "server",
     "python -m sglang.launch_server --model-path TARGET "
     "--speculative-algorithm domino --speculative-draft-model-path DRAFT "
     "--speculative-eagle-topk 4 --speculative-num-draft-tokens 32 "
     "--attention-backend triton --grammar-backend none"),
    ("launch_8b_ids_server", "launch/README.md", "server",
     "python -m sglang.launch_server --model-path Qwen/Qwen3-8B "
     "--speculative-algorithm domino "
     "--speculative-draft-model-path Huang2020/Qwen3-8B-Domino-b16 "
     "--attention-backend triton"),
    ("launch_serve_py_tree", "launch/README.md", "server",
     "python launch/serve.py --model TARGET --draft DRAFT --tree-topk 4 --tree-budget 32"),
    ("launch_serve_py_detach", "launch/README.md", "serve_detach",
     "python launch/serve.py --model Qwen/Qwen3-8B --draft Huang2020/Qwen3-8B-Domino-b16 "
     "--port 30000"),
]  # the --detach one last: --keep-last leaves it on port 30000 for the soak
EXPECT = {"readme_print_command": "sglang.launch_server", "registration_check": "domino"}


say = progress_printer("serving_commands")


def filled(command: str, pair: Path) -> list[str]:
    """The command's argv with the placeholders filled in (whole words only)."""
    argv = shlex.split(command)
    out = []
    for i, a in enumerate(argv):
        if i == 0 and a == "python":
            out.append(sys.executable)
        else:
            out.append(str(pair / PLACEHOLDERS[a]) if a in PLACEHOLDERS else a)
    return out


def port_of(argv: list[str]) -> int:
    return int(argv[argv.index("--port") + 1]) if "--port" in argv else 30000


def stop_group(proc: subprocess.Popen | None, pid: int | None = None) -> None:
    target = pid if pid is not None else (proc.pid if proc is not None else None)
    if target is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(target, sig)
        except ProcessLookupError:
            return
        for _ in range(30):
            if proc is not None and target == proc.pid and proc.poll() is not None:
                return  # reaped (an exited child would otherwise linger as a zombie)
            try:
                os.kill(target, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def wait_health(url: str, timeout: float, proc: subprocess.Popen | None) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            http_json(url + "/health", timeout=5)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(2)
    return False


def probe(url: str) -> dict:
    """A chat completion and a greedy /generate; each: ok, status or error, text."""
    out = {}
    try:
        models = http_json(url + "/v1/models", timeout=30)
        model = (models.get("data") or [{}])[0].get("id", "default")
        body = http_json(url + "/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 24, "temperature": 0}, timeout=60)
        text = body["choices"][0]["message"]["content"]
        out["chat"] = {"ok": bool(text), "text": text[:200],
                       "finish_reason": body["choices"][0].get("finish_reason")}
    except Exception as exc:  # noqa: BLE001 - recorded
        out["chat"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        body = http_json(url + "/generate", {"text": "The capital of France is",
                                             "sampling_params": {"max_new_tokens": 24,
                                                                 "temperature": 0}}, timeout=60)
        text = body.get("text", "")
        out["generate"] = {"ok": bool(text), "text": text[:200],
                           "accept": (body.get("meta_info") or {}).get("spec_verify_ct")}
    except Exception as exc:  # noqa: BLE001 - recorded
        out["generate"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def run_one(cid: str, kind: str, argv: list[str], log: Path, args, keep: bool,
            on_probed=None) -> dict:
    """Run one documented command; ``on_probed(rec)`` is called with the verdict as soon as the
    probe is done, before the server is stopped (a time limit hit while SGLang shuts down, as
    on 2026-12-07, then cannot lose it)."""
    t0 = time.time()
    rec: dict = {"argv": shlex.join(argv), "kind": kind, "log": log.name}
    if kind == "check":
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
        log.write_text(p.stdout + p.stderr)
        rec.update(exit_code=p.returncode, output_tail=(p.stdout + p.stderr)[-600:],
                   ok=p.returncode == 0
                   and EXPECT.get(cid, "").lower() in (p.stdout + p.stderr).lower())
    else:
        url = f"http://127.0.0.1:{port_of(argv)}"
        with open(log, "w") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                    start_new_session=True)
            pid = None
            try:
                if kind == "serve_detach":
                    rc = proc.wait(timeout=args.startup_timeout)
                    text = log.read_text(errors="replace")
                    m = re.search(r"\(pid (\d+)\)", text)
                    pid = int(m.group(1)) if m else None
                    rec.update(exit_code=rc, pid=pid)
                    healthy = rc == 0 and wait_health(url, 30, None)
                else:
                    healthy = wait_health(url, args.startup_timeout, proc)
                rec["healthy"] = healthy
                rec["start_s"] = round(time.time() - t0, 1)
                if healthy:
                    rec["probe"] = probe(url)
                rec["ok"] = healthy and all(v.get("ok") for v in rec.get("probe", {}).values())
                if on_probed is not None:
                    on_probed({**rec, "wall_s": round(time.time() - t0, 1),
                               "note": "recorded before the server was stopped"})
            except subprocess.TimeoutExpired:
                rec.update(ok=False, healthy=False, error="no exit within the start timeout")
            finally:
                if keep and rec.get("ok"):
                    rec["kept_running"] = {"pid": pid or proc.pid, "url": url,
                                           "log": args.detach_log}
                    Path(args.detach_log + ".pid").write_text(f"{pid or proc.pid}\n")
                else:
                    stop_group(proc, pid)
                    if pid is not None:
                        stop_group(proc)
        tail_of = Path(args.detach_log) if kind == "serve_detach" else log
        try:
            rec["log_tail"] = "".join(
                tail_of.read_text(errors="replace").splitlines(True)[-12:])[-1500:]
        except OSError as exc:
            rec["log_tail"] = f"(no log: {exc})"
    rec["wall_s"] = round(time.time() - t0, 1)
    return rec


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", default=str(TINY), help="folder with target/ and drafter-domino/")
    ap.add_argument("--only", default="", help="comma list of command ids (default: all, in "
                    "order)")
    ap.add_argument("--keep-last", action="store_true", help="leave the serve.py --detach "
                    "server running (for the soak)")
    ap.add_argument("--detach-log", default="/tmp/domino_detached_server.log",
                    help="the doc's optional [--log FILE] of the --detach command (its pid goes "
                    "to FILE.pid when --keep-last keeps it running)")
    ap.add_argument("--startup-timeout", type=float, default=240)
    ap.add_argument("--time-budget-s", type=float, default=500)
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--list", action="store_true", help="print the filled-in commands and exit")
    return ap


def render(data: dict) -> str:
    meta = data.get("meta", {})
    lines = [f"# Serving commands of the docs, run as written ({meta.get('date', '')})", "",
             *provenance_lines(meta),
             "- placeholders: TARGET / Qwen/Qwen3-8B -> the tiny target folder, DRAFT / "
             "Huang2020/Qwen3-8B-Domino-b16 -> the tiny drafter folder, `python` -> this "
             "interpreter", "",
             "| id | doc | kind | ok | start s | chat | generate |", "|---|---|---|---|---|---|---|"]
    for cid, r in (data.get("results") or {}).items():
        pr = r.get("probe") or {}
        lines.append(f"| {cid} | {r.get('doc')} | {r.get('kind')} | {r.get('ok')} | "
                     f"{r.get('start_s', '-')} | "
                     f"{(pr.get('chat') or {}).get('ok', '-')} | "
                     f"{(pr.get('generate') or {}).get('ok', '-')} |")
    lines += ["", "Commands as run:", ""]
    for cid, r in (data.get("results") or {}).items():
        lines.append(f"- `{cid}`: `{r.get('argv')}`")
    lines += ["", f"**All ok: {data.get('all_ok')}**"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pair = Path(args.pair)
    only = [x for x in args.only.split(",") if x]
    known = [c[0] for c in COMMANDS]
    if any(x not in known for x in only):
        print(f"serving_commands_gpu.py: error: --only {args.only!r}: expected ids from {known}",
              file=sys.stderr)
        return 2
    todo = [c for c in COMMANDS if not only or c[0] in only]
    if args.list:
        for cid, doc, kind, cmd in todo:
            print(f"{cid} ({doc}, {kind}): {shlex.join(filled(cmd, pair))}")
        return 0
    t_end = time.time() + args.time_budget_s
    with Run(Path(args.out_dir), "serving_commands", argv, args.commit, render=render) as run_:
        res = run_.data.setdefault("results", {})
        last_detach = max((i for i, c in enumerate(todo) if c[2] == "serve_detach"), default=-1)
        for i, (cid, doc, kind, cmd) in enumerate(todo):
            need = 20 if kind == "check" else 90
            if args.keep_last and i < last_detach:
                need += 110  # keep room for the --detach server the soak attaches to
            if time.time() > t_end - need:
                res[cid] = {"doc": doc, "kind": kind, "ok": None, "skipped": "time budget"}
                continue
            say(f"{cid}: {cmd}")
            argv_i = filled(cmd, pair) + (["--detach", "--log", args.detach_log]
                                          if kind == "serve_detach" else [])
            def probed(r, cid=cid, doc=doc, cmd=cmd):
                res[cid] = {"doc": doc, "as_written": cmd, **r}
                run_.write()

            rec = run_one(cid, kind, argv_i,
                          run_.out_dir / f"serving_commands_{cid}.log", args,
                          keep=args.keep_last and i == last_detach, on_probed=probed)
            res[cid] = {"doc": doc, "as_written": cmd, **rec}
            say(f"{cid}: ok={rec.get('ok')} ({rec['wall_s']} s)")
            run_.write()
        ran = [r for r in res.values() if r.get("ok") is not None]
        run_.data["all_ok"] = bool(ran) and len(ran) == len(todo) and all(r["ok"] for r in ran)
    return 0 if run_.data.get("all_ok") else 1


if __name__ == "__main__":
    sys.exit(main())
