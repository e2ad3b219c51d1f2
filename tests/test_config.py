"""Drafter configuration: the public format parses; bad configurations fail naming the field."""

import copy
import json

import pytest

from domino_sglang.config import ConfigError, DrafterConfig

PUBLIC = {  # shape of Huang2020/Qwen3-8B-Domino-b16's config.json
    "architectures": ["DFlashDraftModel"], "model_type": "qwen3", "hidden_size": 4096,
    "intermediate_size": 12288, "num_hidden_layers": 5, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000, "max_position_embeddings": 40960, "num_target_layers": 36,
    "block_size": 16, "torch_dtype": "bfloat16", "emb_dim": 256, "tie_word_embeddings": False,
    "transformers_version": "4.57.0",
    "dflash_config": {"mask_token_id": 151669, "target_layer_ids": [1, 9, 17, 25, 33],
                      "projector_type": "domino", "pure_draft_prefix_len": 1, "emb_dim": 256,
                      "gru_hidden_dim": 1024, "shift_label": True},
}
TARGET = {"hidden_size": 4096, "vocab_size": 151936, "num_hidden_layers": 36,
          "torch_dtype": "bfloat16"}


def _with(path: str, value):
    cfg = copy.deepcopy(PUBLIC)
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


_DELETE = object()


def test_public_config_parses():
    cfg = DrafterConfig.from_dict(PUBLIC)
    assert cfg.is_domino and cfg.shift_label and cfg.pure_draft_prefix_len == 1
    assert (cfg.resolved_block_size, cfg.gru_hidden_dim, cfg.rank) == (16, 1024, 256)
    assert cfg.target_layer_ids == [1, 9, 17, 25, 33] and cfg.mask_token_id == 151669
    assert cfg.dtype == "bfloat16" and cfg.num_proposals == 15
    cfg.check_against_target(TARGET)


def test_plain_dflash_config_has_no_head():
    data = _with("dflash_config.projector_type", _DELETE)
    cfg = DrafterConfig.from_dict(data)
    assert not cfg.is_domino and cfg.pure_draft_prefix_len == 0


def test_round_trip_through_hf_dict(tmp_path):
    cfg = DrafterConfig.from_dict(PUBLIC)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    again = DrafterConfig.from_file(tmp_path)
    assert again.to_hf_dict() == cfg.to_hf_dict()
    assert again.target_layer_ids == cfg.target_layer_ids and again.rank == cfg.rank


BAD = [
    ("architectures", ["Qwen3ForCausalLM"], "architectures"),
    ("dflash_config.projector_type", "medusa", "dflash_config.projector_type='medusa'"),
    ("dflash_config.gru_hidden_dim", _DELETE, "dflash_config.gru_hidden_dim"),
    ("dflash_config.gru_hidden_dim", 0, "dflash_config.gru_hidden_dim=0"),
    ("dflash_config.target_layer_ids", [1, 9, 40], "target_layer_ids contains 40"),
    ("dflash_config.target_layer_ids", [], "target_layer_ids"),
    ("dflash_config.mask_token_id", 200000, "mask_token_id=200000"),
    ("dflash_config.pure_draft_prefix_len", 15, "pure_draft_prefix_len=15"),
    ("block_size", 1, "block_size=1"),
    ("dflash_config.block_size", 8, "block_size=16 differs from dflash_config.block_size=8"),
    ("torch_dtype", "float8_e4m3fn", "dtype='float8_e4m3fn'"),
    ("emb_dim", 128, "emb_dim=128 differs from dflash_config.emb_dim=256"),
    ("num_key_value_heads", 7, "num_key_value_heads=7"),
    ("hidden_size", _DELETE, "hidden_size"),
    ("dflash_config", _DELETE, "dflash_config: missing"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{p}" for p, _, _ in BAD])
def test_bad_config_names_the_field(path, value, message):
    with pytest.raises(ConfigError) as err:
        DrafterConfig.from_dict(_with(path, value))
    assert message in str(err.value)


@pytest.mark.parametrize("field,value,message", [
    ("hidden_size", 2048, "hidden_size: draft has 4096, target has 2048"),
    ("vocab_size", 151000, "vocab_size: draft has 151936, target has 151000"),
    ("num_hidden_layers", 28, "num_target_layers: draft has 36, target.num_hidden_layers is 28"),
    ("torch_dtype", "int8", "dtype: target has 'int8'"),
])
def test_target_mismatch_names_both_values(field, value, message):
    cfg = DrafterConfig.from_dict(PUBLIC)
    with pytest.raises(ConfigError) as err:
        cfg.check_against_target({**TARGET, field: value})
    assert message in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config.json: not found"):
        DrafterConfig.from_file(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        DrafterConfig.from_file(tmp_path)


def test_missing_target_layer_ids_follow_sglangs_default(caplog):
    """No target_layer_ids: the top-level key if present, else one target layer per draft layer
    spread as SGLang 0.5.17's DFlash picks them (the public 8B checkpoint's own ids)."""
    cfg = DrafterConfig.from_dict(_with("dflash_config.target_layer_ids", _DELETE))
    assert cfg.target_layer_ids == [1, 9, 17, 25, 33]  # 36 target layers, 5 draft layers
    assert "target_layer_ids missing" in caplog.text
    top = _with("dflash_config.target_layer_ids", _DELETE)
    top["target_layer_ids"] = [2, 4, 6, 8, 10]
    assert DrafterConfig.from_dict(top).target_layer_ids == [2, 4, 6, 8, 10]
    none = _with("dflash_config.target_layer_ids", _DELETE)
    del none["num_target_layers"]
    with pytest.raises(ConfigError, match="target_layer_ids: missing"):
        DrafterConfig.from_dict(none)


def test_default_target_layer_ids():
    from domino_sglang.config import default_target_layer_ids

    assert default_target_layer_ids(4, 1) == [2]
    assert default_target_layer_ids(28, 3) == [1, 13, 25]
    with pytest.raises(ConfigError, match="at least 4 target layers"):
        default_target_layer_ids(3, 2)
