"""Drafter trainer on a mini target: the loss falls, checkpoints resume, the export loads in the
public format, the CLI validates its config."""

import json

import numpy as np
import pytest
import torch

from domino_sglang.cli.train import main as train_main
from domino_sglang.config import DrafterConfig
from domino_sglang.core.drafter import DominoDrafter
from domino_sglang.hf.tiny import build_tiny_target
from domino_sglang.train.config import DrafterArch, LossConfig, OptimConfig, TrainConfig
from domino_sglang.train.data import TokenDataset
from domino_sglang.train.trainer import DrafterTrainer

V, MASK = 128, 127


def _dataset(n=64, seed=0):
    """Learnable sequences: a prompt, then a response counting up by a per-sequence stride."""
    rng = np.random.default_rng(seed)
    seqs, masks = [], []
    for _ in range(n):
        p = rng.integers(4, 100, size=6).tolist()
        start, stride = int(rng.integers(4, 100)), 1
        r = [4 + (start + stride * j) % 120 for j in range(26)]
        seqs.append(p + r)
        masks.append([0] * 6 + [1] * 26)
    return TokenDataset.from_sequences(seqs, masks)


def _cfg(tmp_path, steps=40, head=True, curriculum=True, **kw):
    return TrainConfig(
        target="unused", data="unused", out_dir=str(tmp_path / "run"),
        drafter=DrafterArch(block_size=6, gru_hidden_dim=16, rank=8, mask_token_id=MASK,
                            head=head, target_layer_ids=[1, 2]),
        loss=LossConfig(gamma=4.0, anchors_per_seq=4, curriculum=curriculum),
        optim=OptimConfig(steps=steps, batch_size=8, max_len=32, lr=1e-2, warmup_steps=2,
                          autocast="none"),
        device="cpu", log_every=1, save_every=10, quiet=True, **kw)


def test_loss_decreases_and_export_roundtrip(tmp_path):
    target = build_tiny_target(seed=0)
    tr = DrafterTrainer(_cfg(tmp_path, steps=60), target=target, dataset=_dataset())
    out_dir = tr.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = np.mean([r["ce_final"] for r in rows[:5]])
    last = np.mean([r["ce_final"] for r in rows[-5:]])
    assert last < first - 0.5, (first, last)
    assert rows[0]["lam"] == 1.0 and rows[-1]["lam"] == 0.0  # curriculum 1 -> 0
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 1000
    loaded = DominoDrafter.from_pretrained(out_dir, require_head=True)
    cfg = DrafterConfig.from_file(out_dir)
    assert cfg.is_domino and cfg.shift_label and cfg.pure_draft_prefix_len == 1
    assert cfg.mask_token_id == MASK and cfg.dtype == "bfloat16"
    cfg.check_against_target(target.config)
    ref = tr.drafter.state_dict()
    for name, t in loaded.state_dict().items():
        torch.testing.assert_close(t.float(), ref[name].float().to(torch.bfloat16).float())


def test_head_off_exports_plain_dflash(tmp_path):
    tr = DrafterTrainer(_cfg(tmp_path, steps=2, head=False), target=build_tiny_target(seed=0),
                        dataset=_dataset(16))
    loaded = DominoDrafter.from_pretrained(tr.train())
    assert not loaded.has_head
    assert loaded.config.shift_label and loaded.config.dflash_config.projector_type is None
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["lam"] == 0.0 and r["ce_base"] == r["ce_final"] for r in rows)


def test_resume_matches_uninterrupted(tmp_path):
    target, data = build_tiny_target(seed=0), _dataset(32)
    full = DrafterTrainer(_cfg(tmp_path / "a", steps=6), target=target, dataset=data)
    full.train()
    part = DrafterTrainer(_cfg(tmp_path / "b", steps=6), target=target, dataset=data)
    part.cfg = part.cfg.model_copy(update={"optim": part.cfg.optim.model_copy(
        update={"steps": 6})})
    # run 3 steps, checkpoint, then a fresh trainer resumes from the checkpoint
    for step in range(3):
        out, _ = part.loss_at(step, step / 6)
        part.opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(part.drafter.parameters(), 1.0)
        for g in part.opt.param_groups:
            from domino_sglang.train.loss import lr_at
            g["lr"] = lr_at(step / 6, 1e-2, 2 / 6, 0.1)
        part.opt.step()
        part.step += 1
    part.save_checkpoint()
    resumed = DrafterTrainer(_cfg(tmp_path / "b", steps=6), target=target, dataset=data)
    assert resumed.step == 3
    resumed.train()
    for (n, a), b in zip(full.drafter.state_dict().items(), resumed.drafter.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_cli_print_config_and_errors(tmp_path, capsys):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"target": "t", "data": "d", "out_dir": "o",
                                    "optim": {"steps": 7}}))
    assert train_main(["--config", str(cfg_file), "--optim.lr", "0.01", "--drafter.head",
                       "false", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["optim"]["steps"] == 7 and shown["optim"]["lr"] == 0.01
    assert shown["drafter"]["head"] is False
    assert train_main(["--config", str(cfg_file), "--loss.curriculum_frac", "2",
                       "--print-config"]) == 2
    assert "loss.curriculum_frac" in capsys.readouterr().err
    with pytest.raises(Exception, match="extra"):
        TrainConfig.model_validate({"target": "t", "data": "d", "out_dir": "o", "stepz": 1})
