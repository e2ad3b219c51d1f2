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
