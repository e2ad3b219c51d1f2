"""The algorithm core imports without SGLang or Transformers; kernels do not install as a
top-level `kernels` module."""

import subprocess
import sys

CODE = """
import sys
sys.modules["sglang"] = None
sys.modules["transformers"] = None
import domino_sglang, domino_sglang.core, domino_sglang.config, domino_sglang.core.drafter
import importlib.util
for name in ("domino_sglang.ops", "domino_sglang.kernels"):
    if importlib.util.find_spec(name) is not None:
        importlib.import_module(name)
import importlib
assert "transformers" not in sys.modules or sys.modules["transformers"] is None
print("ok")
"""


def test_core_imports_without_sglang_or_transformers():
    out = subprocess.run([sys.executable, "-c", "import importlib\n" + CODE],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_kernels_are_namespaced(tmp_path):
    """Outside the repo folder, `domino_sglang.kernels` resolves to our kernels/ and a
    top-level `kernels` (if any) is not ours."""
    code = ("import importlib.util as u, pathlib\n"
            "ours = pathlib.Path(u.find_spec('domino_sglang.kernels').origin).parent\n"
            "assert ours.name == 'kernels', ours\n"
            "top = u.find_spec('kernels')\n"
            "assert top is None or pathlib.Path(top.origin).parent != ours, top.origin\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
