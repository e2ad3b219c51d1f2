"""The CI guard of tests/conftest.py: with a dependency of SGLang hidden (a sitecustomize that
makes ``import orjson`` fail, as a broken --no-deps install would), an ``sglang``-marked test is
skipped locally but FAILS under CI=true or DOMINO_REQUIRE_SGLANG=1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
MARKED = "tests/sglang_plugin/test_request_guard.py::test_guard_hook_applied_by_load_plugins"

_HIDE = '''
import importlib.abc, os, sys

class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in os.environ.get("HIDE_MODULES", "").split(","):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, _Hide())
'''


def _run_hidden(tmp_path, **env_extra):
    (tmp_path / "sitecustomize.py").write_text(_HIDE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DOMINO_REQUIRE_SGLANG",
                                                             "DOMINO_SKIP_REPORT")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
               HIDE_MODULES="orjson", **env_extra)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", MARKED], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_when_sglang_is_required():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_root_conftest", ROOT / "tests/conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    sglang_required = root_conftest.sglang_required

    assert not sglang_required({})
    assert not sglang_required({"CI": "false", "DOMINO_REQUIRE_SGLANG": "0"})
    for env in ({"CI": "true"}, {"CI": "1"}, {"DOMINO_REQUIRE_SGLANG": "1"}):
        assert sglang_required(env), env


@pytest.mark.sglang
@pytest.mark.parametrize("env", [{}, {"CI": "true"}], ids=["local", "ci"])
def test_hidden_dependency_fails_under_ci(tmp_path, env):
    out = _run_hidden(tmp_path, **env)
    text = out.stdout + out.stderr
    if not env:
        assert out.returncode == 0, text[-3000:]
        assert "1 skipped" in text and "hidden by the test" in text, text[-3000:]
    else:
        assert out.returncode == 1, text[-3000:]
        assert "1 error" in text and "SGLang is required here" in text, text[-3000:]
        assert "import sglang: ImportError: No module named 'orjson'" in text, text[-3000:]


def _check_skips():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_check_skips", ROOT / ".ci/check_skips.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_skip_check_counts_gpu_skips_and_refuses_others():
    cs = _check_skips()
    gpu, allow = cs.parse_expected((ROOT / ".ci/expected_skips").read_text())
    assert gpu > 0 and "H200 bundle MANIFEST not present" in allow
    ok = [{"nodeid": f"t::g{i}", "reason": "needs a CUDA device", "gpu": True} for i in range(3)]
    allowed = {"nodeid": "t::m", "reason": "H200 bundle MANIFEST not present", "gpu": False}
    plugin = {"nodeid": "t::p", "reason": "SGLang not importable (...)", "gpu": False}
    assert cs.check(ok, 3, allow) == [] and cs.check(ok + [allowed], 3, allow) == []
    assert cs.check(ok, 2, allow)[0].startswith("3 gpu-marked tests skipped")
    assert cs.check(ok + [plugin], 3, allow) == [
        "skipped but not gpu-marked: t::p (SGLang not importable (...))"]
    with pytest.raises(SystemExit, match="line 1"):
        cs.parse_expected("gpus 3\n")


def test_readme_states_the_expected_skip_count(tmp_path):
    """README's test command and .ci/expected_skips give the same number of skipped tests."""
    cs = _check_skips()
    gpu, _ = cs.parse_expected((ROOT / ".ci/expected_skips").read_text())
    assert cs.readme_skips(ROOT / "README.md") == gpu
    (tmp_path / "README.md").write_text("bash .ci/run  # expect: all passed, 7 skipped (the gpu-marked tests)")
    assert cs.readme_skips(tmp_path / "README.md") == 7
    assert cs.readme_skips(tmp_path / "missing.md") is None
