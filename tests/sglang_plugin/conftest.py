"""Fixtures for the SGLang plugin tests: the torchvision mock (see _tv_mock) and tiny
target/drafter folders. Tests that need SGLang are marked ``@pytest.mark.sglang``: tests/conftest.py
skips them locally without SGLang and fails them under CI (see there)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _tv_mock  # noqa: E402

_tv_mock.install()
from _pair import write_pair  # noqa: E402,F401  (re-exported)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("pair"))
