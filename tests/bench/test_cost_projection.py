"""benchmarks/cost_projection.py on CPU: configs, server commands, step and projection math with
fake timings, markdown, and the plugin's config checks on the written drafter config."""

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from domino_sglang.bench import servers
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_cost",
                                              ROOT / "benchmarks" / "cost_projection.py")
cost = importlib.util.module_from_spec(spec)
sys.modules["bench_cost"] = cost
spec.loader.exec_module(cost)


def test_configs_and_param_count(tmp_path):
    models = cost.write_models(tmp_path)
    t = json.loads((Path(models["target"]) / "config.json").read_text())
    d = json.loads((Path(models["draft"]) / "config.json").read_text())
    assert (t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"],
            t["num_key_value_heads"], t["head_dim"], t["intermediate_size"],
            t["vocab_size"], t["torch_dtype"]) == (4096, 36, 32, 8, 128, 12288, 151936,
                                                   "bfloat16")
    dc = d["dflash_config"]
    assert d["num_hidden_layers"] == 5 and d["architectures"] == ["DFlashDraftModel"]
    assert dc == {"block_size": 16, "target_layer_ids": [1, 9, 17, 25, 33],
                  "mask_token_id": 151669, "projector_type": "domino", "gru_hidden_dim": 1024,
                  "emb_dim": 256, "shift_label": True, "pure_draft_prefix_len": 1}
    p = cost.qwen3_param_count(t)
    assert 8.18e9 < p["total"] < 8.20e9  # Qwen3-8B: 8.19 B parameters, 16.4 GB in bf16
    assert abs(cost.weight_floor_ms(p["total"], 4.3) - 3.81) < 0.02


def test_drafter_config_passes_the_plugin_checks(tmp_path):
    from domino_sglang.config import DrafterConfig

    models = cost.write_models(tmp_path)
    target = json.loads((Path(models["target"]) / "config.json").read_text())
    dom = DrafterConfig.from_file(models["draft"])
    dom.check_against_target(target)
    assert dom.is_domino and dom.mask_token_id == 151669 and dom.resolved_block_size == 16
    plain = DrafterConfig.from_file(models["draft_dflash"])
    plain.check_against_target(target)
    assert not plain.is_domino


@pytest.mark.sglang
def test_validate_server_args_accepts_the_domino_command(tmp_path):
    from domino_sglang.sglang_plugin.validate import validate_server_args

    models = cost.write_models(tmp_path)
    sa = SimpleNamespace(speculative_draft_model_path=models["draft"],
                         model_path=models["target"], tp_size=1, pp_size=1, dtype="bfloat16",
                         skip_tokenizer_init=True, speculative_num_draft_tokens=16,
                         trust_remote_code=False)
    validate_server_args(sa)


def test_server_commands_and_dry_run(tmp_path, capsys):
    args = cost.build_parser().parse_args(["--workdir", str(tmp_path)])
    models = cost.write_models(tmp_path)
    ar = cost.server_command(args, models, "ar", 1)
    dom = cost.server_command(args, models, "domino", 2)
    for c in (ar, dom):
        assert "--skip-tokenizer-init" in c and c[c.index("--load-format") + 1] == "dummy"
        assert c[c.index("--dtype") + 1] == "bfloat16"
    assert "--speculative-algorithm" not in ar
    assert dom[dom.index("--speculative-algorithm") + 1] == "domino"
    assert dom[dom.index("--speculative-draft-model-path") + 1] == models["draft"]
    assert cost.main(["--dry-run", "--workdir", str(tmp_path), "--with-dflash"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["servers"]) == {"ar", "domino", "dflash"}
    assert "DFLASH" in out["servers"]["dflash"]


@pytest.mark.sglang
def test_commands_parse_with_sglang(tmp_path):
    import argparse

    from sglang.srt.server_args import ServerArgs

    p = argparse.ArgumentParser()
    ServerArgs.add_cli_args(p)
    args = cost.build_parser().parse_args(["--workdir", str(tmp_path), "--with-dflash"])
    models = cost.write_models(tmp_path)
    for k in ("ar", "domino", "dflash"):
        ns = p.parse_args(cost.server_command(args, models, k, 5)[3:])
        assert ns.load_format == "dummy" and ns.skip_tokenizer_init


def test_step_time_is_differential():
    short = {"wall_s": 1.0, "steps": 32}
    long = {"wall_s": 2.28, "steps": 288}
    assert cost.step_time_ms(short, long) == pytest.approx(5.0)
    assert cost.step_time_ms(long, long) is None


def test_projection_math_with_fake_timings():
    ar = {"1": 5.0, "16": 6.0, "64": 10.0}
    rd = {"1": 7.0, "16": 12.0, "64": 30.0}
    rows = cost.project(ar, rd, [4.0, 7.17], floor_ms=3.8)
    by = {(r["batch"], r["tau"]): r for r in rows}
    assert len(rows) == 6
    assert by[(1, 4.0)]["speedup"] == round(4 * 5 / 7, 3)
    assert by[(16, 7.17)]["speedup"] == round(7.17 * 6 / 12, 3)
    assert by[(64, 4.0)]["speedup"] == round(4 * 10 / 30, 3)
    assert by[(1, 4.0)]["speedup_vs_floor_ar"] == round(4 * 3.8 / 7, 3)
    assert by[(16, 4.0)]["break_even_tau"] == 2.0
    assert by[(16, 4.0)]["domino_tokens_per_s"] == round(16 * 4 / 12 * 1e3, 1)
    assert by[(16, 4.0)]["ar_tokens_per_s"] == round(16 / 6 * 1e3, 1)
    assert [r["batch"] for r in rows] == [1, 1, 16, 16, 64, 64]
    # a batch missing on one side is left out
    assert {r["batch"] for r in cost.project({"1": 5.0}, rd, [4.0], 3.8)} == {1}
    meta = {"date": "d", "device": "NVIDIA H200", "versions": {"sglang": "0.5.17"},
            "command": "c", "prompt_len": 64, "short_tokens": 32, "long_tokens": 288,
            "ready_s": {"ar": 100}, "params": cost.qwen3_param_count(cost.QWEN3_8B),
            "floor_ms": 3.81, "bandwidth_tbs": 4.3, "measured_bandwidth_tbs": None,
            "floor_ms_measured_bw": None, "batches": [1, 16, 64],
            "ar": {b: {"step_ms": v} for b, v in ar.items()},
            "domino": {b: {"step_ms": v, "tau_random": 1.1} for b, v in rd.items()},
            "errors": {}}
    md = cost.markdown(meta, rows)
    assert "| 16 | 6.00 | 12.00 | 1.10 | 2.00 |" in md
    assert "| 16 | 7.17 | 3.58x |" in md and "NVIDIA H200" in md


@pytest.mark.sglang
def test_dummy_load_fills_the_domino_head_parameters():
    """--load-format dummy never calls DominoDraftModel.load_weights (so its head check does not
    run); SGLang's initialize_dummy_weights fills the head parameters like every other one."""
    import torch
    from sglang.srt.model_loader.weight_utils import initialize_dummy_weights

    from domino_sglang.sglang_plugin.draft_model import _GRUWeights, _Linear

    m = torch.nn.Module()
    m.prefix_gru = _GRUWeights(8, 4)
    m.embed_proj = torch.nn.ModuleDict({"0": _Linear(12, 3), "2": _Linear(3, 10)})
    for p in m.parameters():
        p.data.fill_(float("nan"))
    initialize_dummy_weights(m)
    assert all(torch.isfinite(p).all() and p.abs().max() <= 1e-3 for p in m.parameters())


# ---- start gate, budget, SIGTERM (no servers: fake Server and run_batch) ----------------------
@pytest.fixture
def keep_sigterm():
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


def test_gate_and_budget_options(tmp_path, capsys):
    args = cost.build_parser().parse_args([])
    assert args.start_gate is None and args.gate_timeout_s == 600 and args.budget_s is None
    assert cost.main(["--dry-run", "--workdir", str(tmp_path), "--start-gate",
                      str(tmp_path / "go"), "--gate-timeout-s", "30", "--budget-s", "400"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["start_gate"] == str(tmp_path / "go")
    assert out["gate_timeout_s"] == 30 and out["budget_s"] == 400


def test_wait_for_gate(tmp_path, capsys):
    gate = tmp_path / "go"
    gate.touch()
    assert servers.wait_for_gate(gate, 5) == {"path": str(gate), "wait_s": 0.0, "timed_out": False}
    assert capsys.readouterr().out == ""  # no wait, no line
    gate.unlink()
    threading.Timer(0.3, gate.touch).start()
    res = servers.wait_for_gate(gate, 10, poll_s=0.05)
    assert not res["timed_out"] and 0.2 <= res["wait_s"] < 5
    assert capsys.readouterr().out.count("\n") == 1  # one line when the wait starts
    res = servers.wait_for_gate(tmp_path / "never", 0.2, poll_s=0.05)
    assert res["timed_out"] and res["wait_s"] >= 0.2


def _fake_batch(url, batch, new_tokens, prompt_len, vocab, seed):
    verify = None if url.endswith(":1") else [new_tokens // 2] * batch  # port 1: AR
    steps = new_tokens if verify is None else new_tokens // 2
    return {"wall_s": 0.1 + steps * 0.005, "tokens": [new_tokens] * batch,
            "verify_ct": verify, "steps": steps}


def test_measure_server_stops_at_the_deadline(monkeypatch):
    clock = [0.0]

    def fake(*a, **k):
        clock[0] += 1.0
        return _fake_batch(*a, **k)

    monkeypatch.setattr(cost, "run_batch", fake)
    monkeypatch.setattr(cost, "time", SimpleNamespace(time=lambda: clock[0]))
    args = SimpleNamespace(batches=[1, 16, 64], repeats=2, short_tokens=32, long_tokens=288,
                           prompt_len=64)
    full = cost.measure_server("http://h:2", args, 1000)
    assert list(full) == ["1", "16", "64"] and clock[0] == 15  # (warm-up + 2 x 2) x 3
    assert full["1"]["step_ms"] == pytest.approx(5.0) and full["1"]["tau_random"] == 2.0
    clock[0], res = 0.0, {}
    # warm-up (t 0->1) + one trial (1->3); the second trial and batch 16 would start at t 3
    assert cost.measure_server("http://h:2", args, 1000, deadline=2.5, res=res) is res
    assert list(res) == ["1"] and len(res["1"]["trials_step_ms"]) == 1
    clock[0] = 10.0
    assert cost.measure_server("http://h:2", args, 1000, deadline=5.0) == {}


class _FakeServer(cost.Server):
    def start(self):
        self.log_path.write_text("fake\n")

    def wait_ready(self, timeout):
        self.ready_s = 0.0
        return True


def _run_main(tmp_path, monkeypatch, *extra):
    monkeypatch.setattr(cost, "Server", _FakeServer)
    rc = cost.main(["--workdir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o"),
                    "--base-port", "1", "--batches", "1", "16", "--repeats", "1",
                    "--commit", "feedbee", *extra])
    out = json.loads((tmp_path / "o" / "cost_projection.json").read_text())
    return rc, out, (tmp_path / "o" / "cost_projection.md").read_text()


def test_main_waits_for_the_gate(tmp_path, monkeypatch, keep_sigterm, capsys):
    monkeypatch.setattr(cost, "run_batch", _fake_batch)
    gate = tmp_path / "go"
    threading.Timer(1.5, gate.touch).start()
    rc, out, md = _run_main(tmp_path, monkeypatch, "--start-gate", str(gate))
    assert rc == 0 and "waiting for the start gate" in capsys.readouterr().out
    g = out["meta"]["gate"]
    assert g["path"] == str(gate) and not g["timed_out"] and 0.5 <= g["wait_s"] < 30
    assert "gate" not in out["meta"]["errors"] and out["meta"]["budget_stopped"] is None
    assert set(out["meta"]["ar"]) == set(out["meta"]["domino"]) == {"1", "16"}
    assert {r["batch"] for r in out["projection"]} == {1, 16}
    assert f"start gate: `{gate}`, waited" in md and "TIMED OUT" not in md
    # the harness's provenance (--commit honoured), also in the legacy keys
    assert out["meta"]["git"]["commit"] == "feedbee" and "- commit: feedbee" in md
    assert out["meta"]["versions"]["domino_sglang_commit"] == "feedbee"
    assert "--commit feedbee" in out["meta"]["command"] and out["meta"]["wall_s"] >= 0


def test_main_gate_timeout_measures_anyway(tmp_path, monkeypatch, keep_sigterm):
    monkeypatch.setattr(cost, "run_batch", _fake_batch)
    rc, out, md = _run_main(tmp_path, monkeypatch, "--start-gate", str(tmp_path / "never"),
                            "--gate-timeout-s", "0.5")
    assert rc == 0 and out["meta"]["gate"]["timed_out"]
    assert "measured anyway" in out["meta"]["errors"]["gate"] and "TIMED OUT" in md
    assert set(out["meta"]["domino"]) == {"1", "16"}


def test_main_budget_stops_and_writes(tmp_path, monkeypatch, keep_sigterm):
    monkeypatch.setattr(cost, "run_batch", _fake_batch)
    rc, out, md = _run_main(tmp_path, monkeypatch, "--budget-s", "0.001")
    assert rc == 1 and out["meta"]["ar"] == {} and out["projection"] == []
    assert out["meta"]["budget_stopped"]["missing_batches"]["ar"] == [1, 16]
    assert "budget: 0.001 s (stopped early" in md


def test_main_writes_partial_results_on_sigterm(tmp_path, monkeypatch, keep_sigterm):
    def fake(url, *a, **k):
        if not url.endswith(":1"):  # the Domino server: an outer `timeout` sends SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        return _fake_batch(url, *a, **k)

    monkeypatch.setattr(cost, "run_batch", fake)
    rc, out, md = _run_main(tmp_path, monkeypatch)
    assert rc == 1 and "Terminated" in out["meta"]["errors"]["run"]
    assert set(out["meta"]["ar"]) == {"1", "16"} and out["meta"]["domino"] == {}
    assert "domino_measure" not in out["meta"]["errors"]  # not swallowed per server
    assert out["meta"]["git"]["commit"] == "feedbee" and "- commit: feedbee" in md
