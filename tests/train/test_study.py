"""The drafter recipe study (``python -m domino_sglang.train.study``): each variant changes
what its line says and nothing else, and the stages regen -> train -> eval -> report run end to
end on a CPU with the smoke sizes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from domino_sglang.train.study import DEFAULT_SET, VARIANTS, render, variant_config

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "assets" / "domino-tiny" / "target"
HELDOUT = ROOT / "assets" / "domino-tiny" / "heldout_prompts.jsonl"


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for k in set(a) | set(b):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out |= _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.add(prefix + k)
    return out


def _leaves(over: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in over.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_changes_only_what_it_says(name, tmp_path):
    base = variant_config("base", TARGET, tmp_path, 100.0)
    cfg = variant_config(name, TARGET, tmp_path, 100.0)
    _, over, data = VARIANTS[name]
    over = dict(over)
    frac = over.pop("time_frac", None)
    if frac is not None:
        assert cfg["time_limit_s"] == pytest.approx(100.0 * frac)
        over["time_limit_s"] = cfg["time_limit_s"]
    expected = _leaves(over) | ({"out_dir"} if name != "base" else set())
    if data == "all":
        expected.add("data")
    assert _diff(base, cfg) == expected
    for leaf in _leaves(over):
        node, want = cfg, over
        for part in leaf.split("."):
            node, want = node[part], want[part]
        assert node == want, leaf
    assert cfg["out_dir"] == str(tmp_path / name)
    assert cfg["data"].endswith("regen" if data == "all" else "regen_half")


def test_the_default_set_has_the_comparisons_the_issue_needs():
    # Domino vs head-off DFlash and the curriculum ablation are always measured
    assert {"base", "dflash", "nocurriculum"} <= set(DEFAULT_SET) <= set(VARIANTS)


def test_smoke_study_end_to_end(tmp_path):
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()[:24]]
    prompts = tmp_path / "prompts.jsonl.gz"
    with gzip.open(prompts, "wt") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "input_ids": r["input_ids"]}) + "\n")
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "domino_sglang.train.study", "--smoke", "--prompts",
           str(prompts), "--out", str(out), "--variants", "base,dflash", "--stages",
           "regen,train,eval,report", "--num-prompts", "1", "--max-new-tokens", "8",
           "--time-limit-s", "60", "--jobs", "2", "--commit", "abc1234"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "regen_info.json").read_text())
    # smoke regen: shards of 32 prompts (16 per temperature); base trains on the first half
    assert info["prompts"] == 24 and info["shards"] == 1 and info["half_shards"] == 1
    trained = json.loads((out / "train_info.json").read_text())
    assert info["commit"] == trained["commit"] == "abc1234" and "torch" in trained["versions"]
    assert json.loads((out / "dflash" / "domino_train.json").read_text())["drafter"]["head"] \
        is False
    assert json.loads((out / "base" / "domino_train.json").read_text())["data"] \
        == str(out / "regen_half")
    data = json.loads((out / "study.json").read_text())
    assert data["git"]["commit"] == "abc1234" and "command" in data
    by = {r["name"]: r for r in data["rows"]}
    assert set(by) == {"base", "dflash"}
    for r in by.values():
        assert r["steps"] == 20  # the smoke preset's step count, reached before the budget
        for t in ("0", "1"):
            cell = r[f"eval_T{t}"]
            assert cell["prompts"] == 1 and cell["tau"] >= 1.0
            assert cell["new_tokens"] <= 8
        assert r["sglang_T0"] is None
    md = (out / "study.md").read_text()
    assert md == render(data) and "| dflash | no Domino head" in md


def test_sglang_stage_measures_tau_per_drafter_and_temperature(tmp_path):
    """The sglang stage against stand-in servers (tests/bench/fake_sglang_server.py: Domino
    answers with ceil(tokens / 3) verify rounds): one server per drafter, every prompt at every
    temperature, tau = completion tokens / verify rounds, the whole block every round."""
    fake = ROOT / "tests" / "bench" / "fake_sglang_server.py"
    out = tmp_path / "study"
    logs = tmp_path / "logs"
    logs.mkdir()
    drafter = ROOT / "assets" / "domino-tiny" / "drafter-domino"
    cmd = [sys.executable, "-m", "domino_sglang.train.study", "--stages", "sglang,report",
           "--out", str(out), "--variants", "base", "--reference", f"a={drafter}",
           "--reference", f"b={drafter}", "--num-prompts", "5", "--max-new-tokens", "30",
           "--concurrency", "2", "--launcher", f"{sys.executable} {fake}"]
    env = {**__import__("os").environ, "FAKE_LOG_DIR": str(logs)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prompts = [json.loads(line)["input_ids"] for line in HELDOUT.read_text().splitlines()[:5]]
    # the fake's answer lengths: eos after 20 + sum(ids) % 5 tokens, else max_new_tokens
    lens = [min(30, 21 + sum(p) % 5) for p in prompts]
    want = sum(lens) / sum(-(-n // 3) for n in lens)
    data = json.loads((out / "study.json").read_text())
    by = {r["name"]: r for r in data["rows"]}
    assert set(by) == {"base", "a", "b"}  # base has no drafter: listed, not measured
    assert by["base"]["sglang_T0"] is None
    for name in ("a", "b"):
        for t in ("0", "1"):
            cell = by[name][f"sglang_T{t}"]
            assert cell["ok"] == cell["requests"] == 5 and not cell["errors"]
            assert cell["tau"] == pytest.approx(want)
    sent = [json.loads(line) for line in (logs / "domino_fixed.jsonl").read_text().splitlines()]
    assert len(sent) == 2 * 2 * 5  # 2 servers x 2 temperatures x 5 prompts
    assert sorted({s["sampling_params"]["temperature"] for s in sent}) == [0.0, 1.0]


def test_regen_time_limit_keeps_whole_shards_and_splits_what_is_done(tmp_path, monkeypatch):
    """--regen-time-limit-s stops between shards (a clock that advances 100 s per reading and a
    150-s limit let exactly one of the two shards run); the half / all split uses what is done."""
    from types import SimpleNamespace

    from domino_sglang.train import data as data_mod
    from domino_sglang.train.study import stage_regen

    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()[:64]]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"input_ids": r["input_ids"]}) + "\n" for r in rows))

    def fake_clock(step):  # only data.py's clock (the regeneration loop) is replaced
        ticks = iter(range(100, 10**6, step))
        monkeypatch.setattr(data_mod, "time", SimpleNamespace(monotonic=lambda: next(ticks)))

    fake_clock(100)
    info = stage_regen(TARGET, prompts, tmp_path / "s", smoke=True, seed=0, quiet=True,
                       time_limit_s=150.0)
    assert info["prompts"] == 32 and info["shards"] == 1 and info["half_shards"] == 1
    assert sorted(p.name for p in (tmp_path / "s" / "regen_half").iterdir()) == ["part-00000.npz"]
    fake_clock(1000)
    with pytest.raises(RuntimeError, match="no shard"):
        stage_regen(TARGET, prompts, tmp_path / "s2", smoke=True, seed=0, quiet=True,
                    time_limit_s=150.0)
