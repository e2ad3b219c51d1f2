"""SGLang server processes for the GPU scripts (e2e, compare, cost projection, reliability,
soak): the common flags, start in their own process session with a log file, wait for
``/health`` (several in parallel), dump the schedulers' Python stacks when something hangs, stop
the whole group, count the failures in a server log."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def sglang_command(port: int, flags: list[str]) -> list[str]:
    """``python -m sglang.launch_server`` on loopback at ``port`` with ``flags``."""
    return [sys.executable, "-m", "sglang.launch_server", "--host", "127.0.0.1",
            "--port", str(port), *flags]


def server_flags(target: str, dtype: str, mem_fraction: float, max_total_tokens: int,
                 seed: int, extra: str | list[str] = "",
                 cuda_graph_bs: tuple = (1, 2, 4, 8),
                 decode_log_interval: int | None = 5) -> list[str]:
    """The flags every GPU script starts SGLang with: ``target`` in ``dtype``, Triton attention,
    the PyTorch sampler, no prefill CUDA graph, decode CUDA graphs for ``cuda_graph_bs``, a KV
    pool capped at ``max_total_tokens``, a decode log line every ``decode_log_interval`` steps
    (None: SGLang's default); ``extra``: more flags (a string is split on blanks). The
    tokenizer stays on unless ``extra`` has ``--skip-tokenizer-init``."""
    extra = extra.split() if isinstance(extra, str) else list(extra)
    log = [] if decode_log_interval is None else ["--decode-log-interval",
                                                   str(decode_log_interval)]
    return ["--model-path", str(target), "--dtype", dtype, "--attention-backend", "triton",
            "--sampling-backend", "pytorch", "--disable-prefill-cuda-graph",
            "--cuda-graph-bs", *[str(b) for b in cuda_graph_bs],
            "--mem-fraction-static", str(mem_fraction),
            "--max-total-tokens", str(max_total_tokens), *log,
            "--random-seed", str(seed), *extra]


def spec_flags(algorithm: str, draft: str, num_draft_tokens: int | None) -> list[str]:
    """``--speculative-algorithm`` with its draft model and (unless None) the draft width."""
    flags = ["--speculative-algorithm", algorithm, "--speculative-draft-model-path", str(draft)]
    if num_draft_tokens is not None:
        flags += ["--speculative-num-draft-tokens", str(num_draft_tokens)]
    return flags


class Server:
    def __init__(self, name: str, port: int, cmd: list[str], log_path: Path,
                 env: dict | None = None):
        self.name, self.port, self.cmd = name, port, cmd
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(log_path)
        self.env = env
        self.proc = None
        self.ready_s = None
        self.t0 = None
        self.log = None

    def start(self) -> None:
        self.t0 = time.time()
        self.log = open(self.log_path, "w")
        self.log.write(shlex.join(self.cmd) + "\n")
        self.log.flush()
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=self.env)

    def wait_ready(self, timeout: float) -> bool:
        while time.time() - self.t0 < timeout:
            if self.proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(self.url + "/health", timeout=5)
                self.ready_s = round(time.time() - self.t0, 1)
                return True
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(2)
        return False

    def dump_scheduler_stacks(self) -> list[int]:
        """SIGABRT the server's scheduler processes: SGLang enables faulthandler there, so every
        thread's Python stack lands in the server log (used when a request hangs)."""
        out = subprocess.run(["ps", "-e", "-o", "pid=,sess=,args="], capture_output=True,
                             text=True).stdout
        pids = []
        for line in out.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] == str(self.proc.pid) and "scheduler" in parts[2]:
                pids.append(int(parts[0]))
        for pid in pids:
            os.kill(pid, signal.SIGABRT)
        return pids

    def stop(self, grace_s: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal_stop()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)  # reaped: poll() says it is gone
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        if self.log is not None:
            self.log.close()
            self.log = None

    def signal_stop(self) -> None:
        """SIGTERM to the server's process group, without waiting (see :func:`stop_all`)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def log_tail(self, n: int = 25) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        except OSError:
            return ""


def scan_log(path: Path) -> dict:
    """Failure counts in a server log: Python tracebacks, scheduler exceptions, CUDA errors
    (``readable: False`` when the log cannot be read)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return {"readable": False}
    return {"readable": True, "tracebacks": text.count("Traceback (most recent call last)"),
            "scheduler_exceptions": text.count("Scheduler hit an exception"),
            "cuda_errors": text.lower().count("cuda error")}


def start_all(servers: dict[str, Server], timeout: float) -> dict[str, bool]:
    """Start every server, then wait for all of them in parallel; name -> healthy."""
    for s in servers.values():
        s.start()
    with ThreadPoolExecutor(max(1, len(servers))) as pool:
        return dict(zip(servers, pool.map(lambda s: s.wait_ready(timeout), servers.values())))


def wait_for_gate(path: Path, timeout_s: float, poll_s: float = 1.0) -> dict:
    """Wait until ``path`` exists (at most ``timeout_s``); one line when the wait starts."""
    path, t0 = Path(path), time.time()
    if not path.exists():
        print(f"waiting for the start gate {path} (up to {timeout_s:g} s)", flush=True)
    while not path.exists() and time.time() - t0 < timeout_s:
        time.sleep(poll_s)
    return {"path": str(path), "wait_s": round(time.time() - t0, 1),
            "timed_out": not path.exists()}


def environment_info() -> dict:
    """Host, Python, GPU name and versions (sglang, torch + CUDA, transformers, triton, this
    repository's commit) for the results files of the GPU scripts."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    info = {"host": platform.node(), "python": platform.python_version()}
    vers = {}
    for mod in ("sglang", "torch", "transformers", "triton"):
        try:
            vers[mod] = version(mod)
        except PackageNotFoundError:
            vers[mod] = None
    try:
        import torch

        vers["torch"] = torch.__version__
        vers["cuda"] = torch.version.cuda
        info["device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                          else "cpu (no CUDA)")
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        info["device"] = f"unknown ({exc})"
    from .harness import git_state

    info["git"] = git_state()  # $DOMINO_COMMIT first: a GPU host's copied .git may be stale
    vers["domino_sglang_commit"] = info["git"].get("commit")
    info["versions"] = vers
    return info


def stop_all(servers, grace_s: float = 15.0) -> None:
    """Stop several servers at once: SIGTERM to all, one shared grace period, then
    :meth:`Server.stop` (SIGKILL for what is left). Serially, three 8B servers took up to 45 s,
    which a GPU call's time limit did not leave (session 16, call F lost its JSON)."""
    servers = list(servers)
    for srv in servers:
        srv.signal_stop()
    deadline = time.time() + grace_s
    for srv in servers:
        if srv.proc is not None:
            try:
                srv.proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        srv.stop(grace_s=0.0)
