"""Shared fixtures. On a machine without CUDA, Triton kernels run under the interpreter:
TRITON_INTERPRET=1 is set here, before any kernel module is imported."""

import importlib.util
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


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
