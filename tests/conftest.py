"""Shared fixtures and the CI guards.

On a machine without CUDA, Triton kernels run under the interpreter: TRITON_INTERPRET=1 is set
here, before any kernel module is imported.

Tests marked ``sglang`` need SGLang importable. Locally, without SGLang, they are skipped (with
the import error as the reason). Under CI (``CI`` set to true, as CI services do) or with
``DOMINO_REQUIRE_SGLANG=1`` they FAIL with the import error instead: a broken SGLang install must
not turn the plugin tests into skips.

With ``DOMINO_SKIP_REPORT=PATH`` every skipped test is written to PATH (JSON: node id, reason,
whether it is ``gpu``-marked); ``.ci/check_skips.py`` compares that with ``.ci/expected_skips``.
"""

import importlib
import importlib.util
import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# `import sglang` needs torchvision, which does not load against the CPU torch 2.13 wheel; the
# SGLang tests use a permissive mock. It must be in place before anything imports transformers,
# which caches whether torchvision is available at its first import.
if importlib.util.find_spec("sglang") is not None:
    sys.path.insert(0, str(Path(__file__).parent / "sglang_plugin"))
    import _tv_mock  # noqa: E402

    _tv_mock.install()

# what an `sglang`-marked test may rely on: the package, server arguments, the spec registry
SGLANG_PROBE = ("sglang", "sglang.srt.server_args", "sglang.srt.speculative.spec_info")
_TRUE = ("1", "true", "yes", "on")


def sglang_required(env=os.environ) -> bool:
    """True under CI (CI=true) or with DOMINO_REQUIRE_SGLANG=1: sglang tests fail, never skip."""
    return (env.get("CI", "").strip().lower() in _TRUE
            or env.get("DOMINO_REQUIRE_SGLANG", "").strip().lower() in _TRUE)


_probe_result: list = []  # [None] when the probe passed, [message] when it failed


def sglang_import_error() -> str | None:
    """None if every module of SGLANG_PROBE imports, else 'module: ExcType: message'. Runs once,
    at the first sglang-marked test (the tests import these modules anyway)."""
    if not _probe_result:
        err = None
        for name in SGLANG_PROBE:
            try:
                importlib.import_module(name)
            except Exception as exc:  # ImportError, or anything a half-installed dependency raises
                err = f"import {name}: {type(exc).__name__}: {exc}"
                break
        _probe_result.append(err)
    return _probe_result[0]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("sglang") is None:
        return
    err = sglang_import_error()
    if err is None:
        return
    if sglang_required():
        pytest.fail(f"SGLang is required here (CI={os.environ.get('CI', '')!r}, "
                    f"DOMINO_REQUIRE_SGLANG={os.environ.get('DOMINO_REQUIRE_SGLANG', '')!r}) "
                    f"but cannot be imported: {err}. Install it as .ci/run does "
                    f"(sglang==0.5.17 --no-deps + .ci/requirements-sglang.txt).", pytrace=False)
    pytest.skip(f"SGLang not importable ({err})")


# ---- skip report (DOMINO_SKIP_REPORT=PATH) ---------------------------------------------------
_skipped: list[dict] = []


def pytest_runtest_logreport(report):
    if not report.skipped or getattr(report, "wasxfail", None) is not None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _skipped.append({"nodeid": report.nodeid, "reason": reason.removeprefix("Skipped: "),
                     "gpu": "gpu" in report.keywords})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("DOMINO_SKIP_REPORT")
    if path:
        Path(path).write_text(json.dumps({"skipped": _skipped}, indent=1) + "\n")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
