"""benchmarks/device_calls/*.sh: the GPU calls parse (``bash -n``) and every flag they pass to a
project tool exists in that tool's parser, so a call never spends scarce device time on a
typo or on a flag renamed since the script was written."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALLS = sorted((ROOT / "benchmarks" / "device_calls").glob("*.sh"))


def _script_parser(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem + "_calls", ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_parser()


def _module_parser(name: str):
    return importlib.import_module(name).build_parser()


# how a script calls the tool (as written in the shell line) -> its argparse parser
TOOLS = {
    "benchmarks/side_by_side.py": lambda: _script_parser("benchmarks/side_by_side.py"),
    "benchmarks/sampled_gpu.py": lambda: _script_parser("benchmarks/sampled_gpu.py"),
    "domino_sglang.train.study": lambda: _module_parser("domino_sglang.train.study"),
    "domino_sglang.bench.inflate": lambda: _module_parser("domino_sglang.bench.inflate"),
}
def _known(tool: str) -> set[str]:
    return {s for a in TOOLS[tool]()._actions for s in a.option_strings}


FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _tool_flags(text: str) -> dict[str, set[str]]:
    """Flags per tool: on the line that names the tool, after its name, and in shell variables
    that hold a tool's command (``ST="python3 -m domino_sglang.train.study ..."``) plus the
    lines that use such a variable."""
    out: dict[str, set[str]] = {t: set() for t in TOOLS}
    holders: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for tool in TOOLS:
            i = line.find(tool)
            if i >= 0:
                out[tool] |= set(FLAG.findall(line[i + len(tool):]))
                m = re.match(r"\s*([A-Z_][A-Z0-9_]*)=", line)
                if m:
                    holders[m.group(1)] = tool
        for var, tool in holders.items():
            for m in re.finditer(r"\$\{?" + var + r"\b", line):
                out[tool] |= set(FLAG.findall(line[m.end():]))
    return out


def test_the_calls_exist():
    assert CALLS, "benchmarks/device_calls/ has no call scripts"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("script", CALLS, ids=lambda p: p.name)
def test_call_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", CALLS, ids=lambda p: p.name)
def test_call_flags_exist(script):
    used = _tool_flags(script.read_text())
    for tool, flags in used.items():
        if not flags:
            continue
        unknown = sorted(flags - _known(tool))
        assert not unknown, f"{script.name}: {tool} has no {unknown}"


def test_flag_check_catches_a_typo():
    text = ('ST="python3 -m domino_sglang.train.study --target t"\n'
            "$ST --stages final --final-adopt x --no-such-flag 1\n"
            "python3 benchmarks/side_by_side.py --dtype float16 --tree-config 4x32\n")
    used = _tool_flags(text)
    assert {"--stages", "--final-adopt", "--no-such-flag", "--target"} <= \
        used["domino_sglang.train.study"]
    assert "--no-such-flag" not in _known("domino_sglang.train.study")
    assert "--tree-config" in used["benchmarks/side_by_side.py"]
    assert "--tree-config" not in _known("benchmarks/side_by_side.py")  # it is --tree-configs

