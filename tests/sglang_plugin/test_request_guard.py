"""The request guard: an out-of-vocabulary token id is a 400 (ValueError in the tokenizer
manager's per-request validation), not a device-side assert in the scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from domino_sglang.sglang_plugin.request_guard import out_of_vocab_message

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("ids,bad", [([0, 5, 9], None), ([3, 10], 1), ([-1], 0), ([1, 2.5], 1),
                                     ([], None), (None, None)])
def test_out_of_vocab_message(ids, bad):
    msg = out_of_vocab_message(ids, 10)
    if bad is None:
        assert msg is None
    else:
        assert msg.startswith(f"input_ids[{bad}] = ") and "[0, 10)" in msg


_SUB = """
import sys; sys.path.insert(0, {here!r}); import _tv_mock; _tv_mock.install()
from types import SimpleNamespace
from sglang.srt.plugins import load_plugins
load_plugins()  # register() + HookRegistry.apply_hooks(), as in the launcher
from sglang.srt.managers.tokenizer_manager import TokenizerManager

def manager(algo):
    return SimpleNamespace(server_args=SimpleNamespace(speculative_algorithm=algo),
                           model_config=SimpleNamespace(vocab_size=100), context_len=64,
                           num_reserved_tokens=0, allow_auto_truncate=False,
                           validate_total_tokens=True)

obj = SimpleNamespace(sampling_params={{"max_new_tokens": 4}})
TokenizerManager._validate_one_request(manager("DOMINO"), obj, [1, 2, 99])  # in vocab: fine
try:
    TokenizerManager._validate_one_request(manager("DOMINO"), obj, [1, 100])
    print("RESULT accepted")
except ValueError as exc:
    print("RESULT refused", exc)
try:  # not a Domino server: untouched (SGLang's own checks only)
    TokenizerManager._validate_one_request(manager(None), obj, [1, 100])
    print("RESULT other-untouched")
except ValueError as exc:
    print("RESULT other-refused", exc)
"""


@pytest.mark.sglang
def test_guard_hook_applied_by_load_plugins():
    env = dict(os.environ, SGLANG_PLUGINS="domino")
    out = subprocess.run([sys.executable, "-c", _SUB.format(here=str(HERE))], env=env,
                         capture_output=True, text=True, timeout=180)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    assert len(lines) == 2, out.stderr[-3000:]
    assert lines[0].startswith("RESULT refused input_ids[1] = 100 is outside the vocabulary")
    assert lines[1] == "RESULT other-untouched"
