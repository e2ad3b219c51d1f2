"""Checkpoint format: exact public weight names, round trip, and loud failures."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from domino_sglang import ConfigError, DominoDrafter
from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target

LAYER_NAMES = {
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "self_attn.q_norm.weight", "self_attn.k_norm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    "input_layernorm.weight", "post_attention_layernorm.weight"}
HEAD_NAMES = {"prefix_gru.weight_ih_l0", "prefix_gru.weight_hh_l0", "embed_proj.0.weight",
              "embed_proj.2.weight"}


@pytest.fixture(scope="module")
def target():
    return build_tiny_target()


def _saved(tmp_path, drafter):
    drafter.save_pretrained(tmp_path)
    return load_file(str(tmp_path / "model.safetensors"))


def test_public_weight_names(tmp_path, target):
    drafter = build_tiny_drafter(target, num_layers=2)
    names = set(_saved(tmp_path, drafter))
    expected = {f"layers.{i}.{n}" for i in range(2) for n in LAYER_NAMES}
    expected |= {"fc.weight", "hidden_norm.weight", "norm.weight"} | HEAD_NAMES
    assert names == expected
    state = load_file(str(tmp_path / "model.safetensors"))
    cfg = drafter.config
    assert state["prefix_gru.weight_ih_l0"].shape == (3 * cfg.gru_hidden_dim, cfg.hidden_size)
    assert state["embed_proj.0.weight"].shape == (cfg.rank, cfg.hidden_size + cfg.gru_hidden_dim)
    assert state["embed_proj.2.weight"].shape == (cfg.vocab_size, cfg.rank)
    assert state["fc.weight"].shape == (cfg.hidden_size, len(cfg.target_layer_ids) * cfg.hidden_size)


def test_round_trip_is_exact(tmp_path, target):
    drafter = build_tiny_drafter(target)
    drafter.save_pretrained(tmp_path)
    again = DominoDrafter.from_pretrained(tmp_path)
    a, b = drafter.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "config.json").read_text())["dflash_config"]["projector_type"] == "domino"


def test_checkpoint_without_head_loads_as_plain_dflash(tmp_path, target):
    state = _saved(tmp_path, build_tiny_drafter(target))
    save_file({k: v for k, v in state.items() if k not in HEAD_NAMES},
              str(tmp_path / "model.safetensors"))
    plain = DominoDrafter.from_pretrained(tmp_path)
    assert not plain.has_head and not plain.config.is_domino and plain.head_weights() is None
    with pytest.raises(ConfigError, match="no head weights"):
        DominoDrafter.from_pretrained(tmp_path, require_head=True)


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.pop("embed_proj.2.weight"), "missing weights: ['embed_proj.2.weight']"),
    (lambda s: s.pop("layers.0.mlp.up_proj.weight"), "layers.0.mlp.up_proj.weight"),
    (lambda s: s.__setitem__("fc.weight", torch.zeros(64, 100)), "fc.weight: shape (64, 100)"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), "unexpected weights: ['extra.weight']"),
    (lambda s: s["norm.weight"].__setitem__(0, float("nan")), "norm.weight: contains NaN"),
], ids=["partial-head", "missing-layer-weight", "wrong-shape", "unknown-weight", "non-finite"])
def test_bad_checkpoints_fail_naming_the_weight(tmp_path, target, mutate, message):
    state = _saved(tmp_path, build_tiny_drafter(target))
    mutate(state)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError) as err:
        DominoDrafter.from_pretrained(tmp_path)
    assert message in str(err.value)


def test_truncated_file_fails_clearly(tmp_path, target):
    build_tiny_drafter(target).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ConfigError, match="unreadable safetensors"):
        DominoDrafter.from_pretrained(tmp_path)


def test_rope_buffers_in_the_checkpoint_are_ignored(tmp_path, target, caplog):
    """Non-parameter entries some exporters save (rotary inv_freq) load with a warning; any
    other unknown weight is still refused, naming it."""
    drafter = build_tiny_drafter(target)
    state = _saved(tmp_path, drafter)
    extra = dict(state, **{"layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)})
    save_file(extra, str(tmp_path / "model.safetensors"))
    again = DominoDrafter.from_pretrained(tmp_path)
    assert "ignoring 1 non-parameter entries" in caplog.text
    assert all(torch.equal(drafter.state_dict()[k], v) for k, v in again.state_dict().items())
    save_file(dict(state, **{"layers.0.surprise.weight": torch.ones(4)}),
              str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="unexpected weights"):
        DominoDrafter.from_pretrained(tmp_path)
