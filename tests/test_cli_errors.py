"""Every row of docs/cli_errors.md: a bad input to a command-line tool ends in ONE line on
stderr naming the argument and the value, exit code 2, no traceback, before any model loads
and before anything is written (the output folders given are checked afterwards).

The tools run as subprocesses (``sys.executable -m ...``), two at a time; each call stops at
validation, so it costs about one Python + torch start-up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "assets" / "domino-tiny"
PY = sys.executable
GEN = [PY, "-m", "domino_sglang", "generate"]
TRAIN = [PY, "-m", "domino_sglang.cli.train"]
EVAL = [PY, "-m", "domino_sglang.cli.eval"]
LOAD = [PY, "-m", "domino_sglang.bench.load"]
RECIPE = [PY, "-m", "domino_sglang.train.recipe"]
STUDY = [PY, "-m", "domino_sglang.train.study"]
SERVE = [PY, str(ROOT / "launch" / "serve.py")]
TARGET, DRAFT = str(TINY / "target"), str(TINY / "drafter-domino")

if torch.cuda.is_available():
    BAD_DEVICE = ("cuda:99", f"this machine has {torch.cuda.device_count()} CUDA device(s)")
else:
    BAD_DEVICE = ("cuda", "CUDA is not available on this machine")

# (id, command with {tmp} for the scratch folder, substrings of the one error line,
#  paths under {tmp} that must not exist afterwards)
CASES = [
    ("generate-target-missing-with-draft", GEN + ["--target", "/nonexistent", "--draft", "X"],
     ["--target=/nonexistent: no such folder"], []),
    ("generate-target-missing", GEN + ["--target", "/nonexistent"],
     ["--target=/nonexistent: no such folder"], []),
    ("generate-hub-id", GEN + ["--target", "Qwen/Qwen3-8B", "--draft", DRAFT],
     ["--target=Qwen/Qwen3-8B: no such folder", "huggingface-cli download Qwen/Qwen3-8B"], []),
    ("generate-target-without-draft", GEN + ["--target", TARGET],
     ["given without --draft", "add --draft DIR"], []),
    ("generate-draft-without-target", GEN + ["--draft", DRAFT],
     ["--draft=", "given without --target"], []),
    ("generate-empty-prompt", GEN + ["--prompt", "", "--no-chat"],
     ["--prompt='': empty prompt"], []),
    ("generate-negative-temperature", GEN + ["--temperature", "-1"],
     ["--temperature=-1.0: must be >= 0"], []),
    ("generate-top-p-zero", GEN + ["--top-p", "0"], ["--top-p=0.0: must be > 0 and <= 1"], []),
    ("generate-zero-new-tokens", GEN + ["--max-new-tokens", "0"],
     ["--max-new-tokens=0: must be >= 1"], []),
    ("generate-zero-repeats", GEN + ["--repeats", "0"], ["--repeats=0: must be >= 1"], []),
    ("generate-not-an-int", GEN + ["--max-new-tokens", "abc"],
     ["argument --max-new-tokens", "'abc'"], []),
    ("generate-unknown-device", GEN + ["--device", "tpu"], ["--device=tpu: unknown device"], []),
    ("generate-device-absent", GEN + ["--device", BAD_DEVICE[0]],
     [f"--device={BAD_DEVICE[0]}: {BAD_DEVICE[1]}"], []),
    ("generate-no-config-json", GEN + ["--target", "{tmp}/empty", "--draft", DRAFT],
     ["--target={tmp}/empty: no config.json in this folder"], []),
    ("generate-pair-mismatch", GEN + ["--target", TARGET, "--draft", "{tmp}/wide-drafter"],
     ["--draft={tmp}/wide-drafter: does not fit --target", "hidden_size"], []),
    ("generate-json-folder-missing", GEN + ["--json", "{tmp}/no/such/r.json"],
     ["--json={tmp}/no/such/r.json: folder {tmp}/no/such does not exist"], ["no"]),
    ("generate-random-pair-with-target", GEN + ["--random-pair", "--target", TARGET],
     ["--target=", "cannot be combined with --random-pair"], []),
    ("train-target-missing", TRAIN + ["--target", "/nonexistent", "--data", "{tmp}",
                                      "--out-dir", "{tmp}/run"],
     ["--target=/nonexistent: no such folder"], ["run"]),
    ("train-data-without-shards", TRAIN + ["--target", TARGET, "--data", "{tmp}/empty",
                                           "--out-dir", "{tmp}/run"],
     ["--data={tmp}/empty: no part-*.npz files"], ["run"]),
    ("train-required-missing", TRAIN, ["--target: required", "--out-dir: required"], []),
    ("train-bad-value", TRAIN + ["--target", TARGET, "--data", "{tmp}", "--out-dir",
                                 "{tmp}/run", "--optim.lr", "-1"],
     ["--optim.lr=-1.0", "greater than 0"], ["run"]),
    ("train-not-an-int", TRAIN + ["--optim.steps", "abc"],
     ["argument --optim.steps: expected INT, got 'abc'"], []),
    ("train-config-missing", TRAIN + ["--config", "{tmp}/nope.json"],
     ["--config={tmp}/nope.json: no such file"], []),
    ("eval-drafter-not-name-dir", EVAL + ["--target", TARGET, "--drafter", DRAFT,
                                          "--prompts", "p.jsonl"],
     ["--drafter=", "expected NAME=DIR"], []),
    ("eval-bad-temperature", EVAL + ["--target", TARGET, "--drafter", f"d={DRAFT}",
                                     "--prompts", "p.jsonl", "--temperatures", "0,abc"],
     ["--temperatures=0,abc: 'abc' is not a number"], []),
    ("eval-prompts-missing", EVAL + ["--target", TARGET, "--drafter", f"d={DRAFT}",
                                     "--prompts", "{tmp}/p.jsonl"],
     ["--prompts={tmp}/p.jsonl: no such file"], []),
    ("load-zero-concurrency", LOAD + ["--concurrency", "0", "--out", "{tmp}/load"],
     ["--concurrency=0: must be >= 1"], ["load"]),
    ("load-url-without-scheme", LOAD + ["--base-url", "localhost:30000"],
     ["--base-url=localhost:30000: not an http(s) URL"], []),
    ("load-no-server", LOAD + ["--base-url", "http://127.0.0.1:1", "--prompts", "random",
                               "--out", "{tmp}/load"],
     ["--base-url=http://127.0.0.1:1: cannot connect"], ["load"]),
    ("recipe-unknown-stage", RECIPE + ["--stages", "target,foo", "--out", "{tmp}/r"],
     ["--stages=target,foo: unknown stage 'foo'"], ["r"]),
    ("recipe-shipped-assets", RECIPE + ["--stages", "export", "--assets", str(TINY),
                                        "--out", "{tmp}/r"],
     ["is the shipped assets/domino-tiny", "--overwrite-shipped"], ["r"]),
    ("recipe-missing-stage-input", RECIPE + ["--stages", "drafters", "--data", "{tmp}/d",
                                             "--out", "{tmp}/r"],
     ["--out={tmp}/r: stage drafters needs", "run the target stage first"], ["r", "d"]),
    ("study-unknown-variant", STUDY + ["--variants", "base,lr9", "--out", "{tmp}/s"],
     ["--variants=base,lr9: unknown variant 'lr9'", "choose from base,"], ["s"]),
    ("study-reference-not-a-drafter", STUDY + ["--stages", "eval", "--reference",
                                               "x={tmp}/empty", "--out", "{tmp}/s"],
     ["--reference={tmp}/empty: no config.json in this folder"], ["s"]),
    ("study-train-without-regen", STUDY + ["--stages", "train", "--out", "{tmp}/s"],
     ["--out={tmp}/s: stage train needs {tmp}/s/regen", "run the regen stage first"], ["s"]),
    ("study-bad-pick-margin", STUDY + ["--pick-margin", "1.5", "--out", "{tmp}/s"],
     ["--pick-margin=1.5: must be >= 0 and < 1"], ["s"]),
    ("study-bad-server-env", STUDY + ["--server-env", "FOO", "--out", "{tmp}/s"],
     ["--server-env=FOO: expected KEY=VALUE"], ["s"]),
    ("serve-draft-missing", SERVE + ["--model", "m", "--draft", "/nonexistent"],
     ["--draft=/nonexistent: no such folder"], []),
    ("serve-tree-without-budget", SERVE + ["--model", "m", "--draft", DRAFT, "--tree-topk", "4"],
     ["--tree-topk=4: experimental tree mode needs --tree-budget"], []),
    ("serve-bad-mem-fraction", SERVE + ["--model", "m", "--draft", DRAFT, "--mem-fraction",
                                        "1.5"],
     ["--mem-fraction=1.5: must be > 0 and < 1"], []),
]


def _scratch(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    wide = tmp / "wide-drafter"
    wide.mkdir()
    cfg = json.loads((TINY / "drafter-domino" / "config.json").read_text())
    cfg["hidden_size"] *= 2  # does not fit the 256-wide target
    (wide / "config.json").write_text(json.dumps(cfg))
    shutil.copy(TINY / "drafter-domino" / "model.safetensors", wide / "model.safetensors")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case once (two at a time); id -> (scratch dir, CompletedProcess)."""
    def one(case):
        cid, cmd, _, _ = case
        tmp = tmp_path_factory.mktemp(cid)
        _scratch(tmp)
        argv = [c.replace("{tmp}", str(tmp)) for c in cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp, timeout=120)
        return cid, (tmp, proc)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(outcomes, case):
    cid, _, expected, absent = case
    tmp, proc = outcomes[cid]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and " error: " in lines[0], lines
    for text in expected:
        assert text.replace("{tmp}", str(tmp)) in lines[0], (text, lines[0])
    for name in absent:
        assert not (tmp / name).exists(), f"{name} was created before validation"
    assert proc.stdout == ""


def test_debug_shows_the_traceback():
    proc = subprocess.run(GEN + ["--temperature", "-1", "--debug"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "CliError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("--temperature=-1.0: must be >= 0; "
                                                        "use 0 for greedy decoding or a "
                                                        "positive value to sample")


def test_table_in_docs_lists_every_case():
    doc = (ROOT / "docs" / "cli_errors.md").read_text()
    missing = [cid for cid, *_ in CASES if f"`{cid}`" not in doc]
    assert not missing and len(CASES) >= 20
