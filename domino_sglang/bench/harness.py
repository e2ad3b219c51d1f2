"""The run harness of the GPU benchmarks: provenance, phases, servers, result files.

A :class:`Run` records what ran (date, the exact command, host, GPU name and memory, versions of
torch / triton / sglang / transformers, the commit with its dirty state), runs named phases
(an exception ends that phase, is recorded, and the run goes on or stops as the caller says),
and *always* writes ``<stem>.json`` + ``<stem>.md`` into its folder, also when interrupted
(``SIGTERM`` from an outer ``timeout`` included)::

    with Run(out_dir, "side_by_side", argv, commit=args.commit) as run:
        with run.phase("start"):
            ...
        run.data["rows"] = rows
        run.markdown = render(run.data)

On the GPU host the working tree is a copy without ``.git``: the commit then comes from
``--commit`` / ``DOMINO_COMMIT`` (what the lead passes), and the dirty state from
``git status --porcelain`` where it can run, else ``None`` (unknown, said so).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
VERSION_PACKAGES = ("torch", "triton", "sglang", "transformers", "flashinfer-python",
                    "sglang-kernel")


def _git(args: list[str], repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(commit: str | None = None, repo: Path = REPO) -> dict:
    """The commit that ran and whether the tree differed from it.

    ``commit`` (``--commit``), else ``$DOMINO_COMMIT``, else ``git rev-parse HEAD``. ``dirty``:
    True / False from ``git status --porcelain`` (untracked files included), None when git
    cannot tell (no repository: a copied tree)."""
    head = (_git(["rev-parse", "HEAD"], repo) or "").strip() or None
    source = "--commit" if commit else None
    if not commit and os.environ.get("DOMINO_COMMIT"):
        commit, source = os.environ["DOMINO_COMMIT"].strip(), "DOMINO_COMMIT"
    if not commit:
        commit, source = head, ("git" if head else None)
    status = _git(["status", "--porcelain"], repo)
    changed = [line[3:] for line in (status or "").splitlines() if line.strip()]
    out = {"commit": commit, "commit_source": source, "git_head": head,
           "dirty": None if status is None else bool(changed),
           "dirty_files": changed[:50], "dirty_files_total": len(changed)}
    if commit and source != "git" and commit.endswith("-dirty"):
        # `git describe --always --dirty` on the machine that sent the tree: it knows
        out.update(commit=commit[: -len("-dirty")], dirty=True)
    elif commit and head and not head.startswith(commit) and not commit.startswith(head):
        out["warning"] = (f"recorded commit {commit} differs from this tree's HEAD {head} (a "
                          "copied tree with a stale .git): dirty state unknown here; pass "
                          "`git describe --always --dirty` as the commit to record it")
        out["dirty"] = None
    return out


def package_versions(names=VERSION_PACKAGES) -> dict:
    """Installed versions (``importlib.metadata``; nothing is imported); None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def gpu_info() -> dict:
    """GPU name, total/used memory (MiB) and driver from ``nvidia-smi``; ``available: False``
    without one (this process never initialises CUDA: the servers own the GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,"
                              "driver_version", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    rows = [r.split(", ") for r in out.stdout.strip().splitlines() if r.strip()]
    if out.returncode != 0 or not rows:
        return {"available": False, "reason": (out.stderr or "no GPU listed").strip()[:200]}
    gpus = [{"name": r[0], "memory_total_mib": int(float(r[1])),
             "memory_used_mib": int(float(r[2])), "driver": r[3] if len(r) > 3 else None}
            for r in rows if len(r) >= 3]
    return {"available": True, "count": len(gpus), "gpus": gpus,
            "name": gpus[0]["name"] if gpus else None}


def provenance(argv: list[str] | None = None, commit: str | None = None) -> dict:
    argv = list(sys.argv if argv is None else argv)
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *argv]), "cwd": os.getcwd(),
            "host": platform.node(), "python": platform.python_version(),
            "gpu": gpu_info(), "versions": package_versions(), "git": git_state(commit)}


def environment_fields(meta: dict) -> dict:
    """The environment keys the older GPU scripts have always written (``host``, ``python``,
    ``device``, ``versions``, ``git``: :func:`servers.environment_info`), made to agree with
    ``meta`` (a :func:`provenance`, whose git state honours ``--commit``): its git state, and its
    versions merged under the environment's."""
    from .servers import environment_info

    info = environment_info()
    git = meta.get("git") or {}
    info["git"] = git
    info["versions"] = {**(meta.get("versions") or {}), **info["versions"],
                        "domino_sglang_commit": git.get("commit")}
    return info


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")


def write_results(out_dir: Path, stem: str, data: dict, markdown: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    jpath.write_text(json.dumps(data, indent=2, default=str) + "\n")
    mpath.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return [jpath, mpath]


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception that ``except Exception`` does not swallow."""


def on_term(signum, frame):
    """SIGTERM handler: raise :class:`Terminated` once (a second signal is ignored, so that an
    outer ``timeout`` does not cut the writing of the partial results)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"terminated by signal {signum}")


def run_phase(res: dict, name: str, fn) -> None:
    """Run one check phase; record its error as ``res["error_<name>"]`` instead of losing the
    other phases."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
        res[f"error_{name}"] = f"{type(exc).__name__}: {exc}"


class Run:
    """One benchmark run: provenance, phases, errors, and result files written on exit."""

    def __init__(self, out_dir: Path, name: str, argv: list[str] | None = None,
                 commit: str | None = None, render=None, stem: str | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stem = stem or f"{name}_{stamp()}"  # a fixed stem: scripts with fixed file names
        self.t0 = time.time()
        self.render = render  # data -> markdown (called at write time)
        self.data = {"meta": {"name": name, **provenance(argv, commit)},
                     "phases": {}, "errors": {}}
        self.paths: list[Path] = []
        self._old_term = None

    def __enter__(self) -> "Run":
        try:
            self._old_term = signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread (tests): no handler
            self._old_term = None
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.data["errors"]["run"] = f"{exc_type.__name__}: {exc}"
        self.write()
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
        return exc_type is not None and issubclass(exc_type, Terminated)

    def elapsed(self) -> float:
        return time.time() - self.t0

    @contextmanager
    def phase(self, name: str, fatal: bool = False):
        """Time a phase; an ``Exception`` is recorded under ``errors[name]`` and re-raised only
        when ``fatal``."""
        t = time.time()
        rec = self.data["phases"].setdefault(name, {})
        try:
            yield rec
            rec["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded
            rec["status"] = "error"
            self.data["errors"][name] = f"{type(exc).__name__}: {exc}"
            logger.exception("phase %s failed", name)
            if fatal:
                raise
        finally:
            rec["wall_s"] = round(time.time() - t, 2)

    def write(self) -> list[Path]:
        self.data["meta"]["wall_s"] = round(self.elapsed(), 1)
        md = ""
        if self.render is not None:
            try:
                md = self.render(self.data)
            except Exception as exc:  # noqa: BLE001 - the JSON must still be written
                self.data["errors"]["markdown"] = f"{type(exc).__name__}: {exc}"
                md = f"# {self.data['meta']['name']}\n\nmarkdown rendering failed: {exc}\n"
        self.paths = write_results(self.out_dir, self.stem, self.data, md)
        return self.paths


# ---- command lines shared by the server-starting scripts ------------------------------------
def add_seed_extra_commit_args(add) -> None:
    """``--seed``, ``--extra-server-args`` and ``--commit``: every server-starting script."""
    add("--seed", type=int, default=0)
    add("--extra-server-args", default="", help="appended to every server command")
    add("--commit", default=None, help="the commit that ran (else $DOMINO_COMMIT, else git)")


def add_server_run_args(add, *, out_name: str, base_port: int) -> None:
    """The flags every server-starting benchmark script takes, added with ``add`` (a parser's
    ``add_argument``): ports, seed, extra server flags, the commit, the output folder, the
    tests' fake launcher and ``--dry-run``."""
    import argparse

    add("--base-port", type=int, default=base_port)
    add_seed_extra_commit_args(add)
    add("--out-dir", type=Path, default=REPO / "benchmarks" / "results" / out_name)
    add("--launcher", default=None, help=argparse.SUPPRESS)  # tests: a fake server command
    add("--dry-run", action="store_true", help="print the plan and server commands; start "
        "nothing")


def parse_recording_argv(parser, argv, script: str):
    """``parser.parse_args(argv)`` with ``args.argv`` = the script and its arguments (for the
    provenance of the result files)."""
    args = parser.parse_args(argv)
    args.argv = [str(Path(script))] + list(sys.argv[1:] if argv is None else argv)
    return args


def add_memory_plan_args(add, *, fraction_help: str, kv_help: str, budget_s: float,
                         budget_help: str, reserve_s: float, startup_timeout_s: float) -> None:
    """The memory-plan and time-budget flags of the scripts that start several servers on one
    GPU (side_by_side, profile_round)."""
    add("--mem-fraction-static", type=float, default=None, help=fraction_help)
    add("--max-total-tokens", type=int, default=None, help=kv_help)
    add("--gpu-mem-gb", type=float, default=None,
        help="GPU memory for the plan (default: nvidia-smi, else 80)")
    add("--time-budget-s", type=float, default=budget_s, help=budget_help)
    add("--reserve-s", type=float, default=reserve_s,
        help=f"kept free at the end for writing ({reserve_s:g})")
    add("--startup-timeout-s", type=float, default=startup_timeout_s)


def provenance_lines(meta: dict) -> list[str]:
    """Markdown bullet lines of a result file's provenance (command, commit + dirty, GPU,
    versions)."""
    git, gpu = meta.get("git") or {}, meta.get("gpu") or {}
    return [f"- command: `{meta.get('command')}`",
            f"- commit: {git.get('commit')} dirty={git.get('dirty')}; GPU: {gpu.get('name')}",
            f"- versions: {meta.get('versions')}"]


def int_list_type(what: str, example: str, unique_sorted: bool = False):
    """An argparse ``type`` for a comma/space list of integers >= 1 (``what`` names them in the
    error; ``unique_sorted`` sorts and drops repeats)."""
    import argparse

    def parse(text: str) -> list[int]:
        try:
            vals = [int(x) for x in text.replace(",", " ").split()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"expected integers like {example}: {text!r}") from exc
        if not vals or any(v < 1 for v in vals):
            raise argparse.ArgumentTypeError(f"{what} must be >= 1: {text!r}")
        return sorted(set(vals)) if unique_sorted else vals

    return parse


def pair_script_parser(doc: str):
    """(parser, its ``add_argument``) for a script that runs a *pair* (``--pair``: ``tiny`` or
    a folder with target/, drafter-domino/, drafter-dflash/)."""
    import argparse

    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="tiny", help="'tiny' (assets/domino-tiny) or a pair "
                   "folder with target/, drafter-domino/, drafter-dflash/ (default: "
                   "%(default)s)")
    return p, p.add_argument


class Budget:
    """A wall-clock budget of ``seconds`` from ``start`` (default: now)."""

    def __init__(self, seconds: float, start: float | None = None):
        self.deadline = (time.time() if start is None else start) + seconds

    def left(self) -> float:
        return self.deadline - time.time()


def progress_printer(script: str):
    """``say(msg)`` for a GPU script's progress lines (flushed, with the time): the call's log."""
    def say(msg: str) -> None:
        print(f"[{script} {time.strftime('%H:%M:%S')}] {msg}", flush=True)
    return say
