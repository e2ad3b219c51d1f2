"""What every command-line tool of the project shares: one-line errors, old flag spellings,
``--debug``, and the checks of paths and numbers that run before anything heavy is imported.

A bad input ends in ONE line on stderr, ``PROG: error: --flag=VALUE: problem; fix``, and exit
code 2; nothing is loaded or written before the inputs are checked. ``--debug`` (any tool) adds
the Python traceback. An unexpected failure at run time is also one line (exit code 1) unless
``--debug`` is given.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path


class CliError(Exception):
    """A bad command-line input: names the argument, the value given and the fix."""

    def __init__(self, arg: str, value, problem: str, fix: str | None = None):
        self.arg, self.value, self.problem, self.fix = arg, value, problem, fix
        super().__init__(str(self))

    def __str__(self) -> str:
        head = self.arg if self.value is None else f"{self.arg}={show(self.value)}"
        text = f"{head}: {self.problem}" if head else self.problem
        return text + (f"; {self.fix}" if self.fix else "")


def show(value) -> str:
    """A value as the user would type it (quoted when empty or with spaces)."""
    text = str(value)
    return repr(text) if text == "" or any(c.isspace() for c in text) else text


def plain(doc: str) -> str:
    """A module docstring as --help text: without reStructuredText literal markup."""
    return re.sub(r":(class|func|mod|meth):`([^`]*)`", r"\2", doc).replace("``", "") \
        .replace("::\n", ":\n")


class CliParser(argparse.ArgumentParser):
    """argparse with one-line usage errors, ``--debug``, and old spellings of flags.

    ``--some_flag`` is accepted for ``--some-flag`` (and ``aliases`` maps other old names) with a
    one-line warning on stderr.
    """

    def __init__(self, *args, aliases: dict[str, str] | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.old_spellings = dict(aliases or {})
        self.add_argument("--debug", action="store_true",
                          help="show the Python traceback of an error (default: off)")

    def error(self, message: str):  # argparse's contract: print, then exit with code 2
        message = " ".join(message.split())
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def _respell(self, argv: Sequence[str]) -> list[str]:
        known = set(self._option_string_actions)
        out: list[str] = []
        for i, tok in enumerate(map(str, argv)):
            if tok == "--":
                out.extend(map(str, argv[i:]))
                break
            if tok.startswith("--"):
                flag, eq, value = tok.partition("=")
                new = self.old_spellings.get(flag) or flag.replace("_", "-")
                if flag not in known and new != flag and new in known:
                    print(f"{self.prog}: warning: {flag} is an old spelling of {new}; "
                          f"use {new}", file=sys.stderr)
                    tok = new + eq + value
            out.append(tok)
        return out

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._respell(args), namespace)


def run_cli(prog: str, argv: Sequence[str] | None, body: Callable[[list[str]], int]) -> int:
    """Run ``body(argv)``: a :class:`CliError` becomes one line and exit code 2, any other
    exception one line and exit code 1 (``--debug``: the traceback as well)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own = argv[: argv.index("--")] if "--" in argv else argv
    debug = "--debug" in own
    try:
        return body(argv)
    except CliError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; --debug shows where it came from
        if debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        hint = "" if debug else " (run again with --debug for the traceback)"
        print(f"{prog}: error: {type(exc).__name__}: {first}{hint}", file=sys.stderr)
        return 1


# ---- checks (no torch, no model) ----------------------------------------------------------------
def check_number(arg: str, value, *, ge=None, gt=None, le=None, lt=None,
                 fix: str | None = None) -> None:
    """``value`` is finite and inside the bounds, else a :class:`CliError` naming ``arg``."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise CliError(arg, value, "must be a finite number", fix)
    bounds = [(ge, value >= ge if ge is not None else True, f">= {ge}"),
              (gt, value > gt if gt is not None else True, f"> {gt}"),
              (le, value <= le if le is not None else True, f"<= {le}"),
              (lt, value < lt if lt is not None else True, f"< {lt}")]
    need = " and ".join(text for bound, _, text in bounds if bound is not None)
    if not all(ok for _, ok, _ in bounds):
        raise CliError(arg, value, f"must be {need}", fix)


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def check_device(arg: str, value: str) -> None:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``; CUDA must be present when asked for
    (imports torch only then)."""
    if not _DEVICE.fullmatch(value):
        raise CliError(arg, value, "unknown device", "use auto, cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(arg, value, "CUDA is not available on this machine",
                           "use --device cpu (or auto)")
        n = int(value.split(":")[1]) if ":" in value else 0
        if n >= torch.cuda.device_count():
            raise CliError(arg, value, f"this machine has {torch.cuda.device_count()} CUDA "
                           "device(s)", "pick an index below that")


def resolve_device_name(value: str) -> str:
    if value != "auto":
        return value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_dir(arg: str, value, what: str = "model") -> Path:
    """A local folder with a ``config.json``: a missing path is never taken for a Hub id."""
    path = Path(value).expanduser()
    if not path.exists():
        fix = "give a local folder"
        if re.fullmatch(r"[\w.-]+/[\w.-]+", str(value)) and not str(value).startswith("."):
            fix += f" (to use the Hub model {value}, download it first: "
            fix += f"huggingface-cli download {value} --local-dir DIR)"
        raise CliError(arg, value, "no such folder", fix)
    if not path.is_dir():
        raise CliError(arg, value, "is a file, not a folder", f"give the folder of the {what}")
    if not (path / "config.json").is_file():
        raise CliError(arg, value, "no config.json in this folder",
                       f"give the folder that holds the {what}'s config.json and weights")
    return path


def check_input_file(arg: str, value) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise CliError(arg, value, "no such file", "check the path")
    if not path.is_file():
        raise CliError(arg, value, "is a folder, not a file", "give a file")
    return path


def check_output_file(arg: str, value) -> Path:
    """An output file path whose folder exists (nothing is created here)."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise CliError(arg, value, "is a folder", "give a file name, e.g. DIR/results.json")
    if not path.parent.is_dir():
        raise CliError(arg, value, f"folder {path.parent} does not exist",
                       "create it first or pick another path")
    return path


def check_output_dir(arg: str, value) -> Path:
    """An output folder: may exist (as a folder) or not yet; nothing is created here."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise CliError(arg, value, "is a file, not a folder", "give a folder path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CliError(arg, value, f"{parent} is a file", "give a folder path")
    return path
