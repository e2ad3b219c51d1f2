"""Bad checkpoints and server arguments not already covered by tests/test_config.py,
tests/core/test_drafter_io.py and tests/sglang_plugin/test_plugin.py (docs/bad_inputs.md).
``validate_server_args`` is called with a plain namespace: no SGLang import needed for local
folders."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from domino_sglang import ConfigError, DominoDrafter
from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target
from domino_sglang.sglang_plugin.validate import (DominoServerArgsError,
                                                  check_resolved_server_args,
                                                  validate_server_args)

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets/domino-tiny"


def _sa(target, draft, **kw):
    base = dict(model_path=str(target), speculative_draft_model_path=str(draft),
                speculative_num_draft_tokens=None, speculative_dflash_block_size=None,
                tp_size=1, pp_size=1, enable_dp_attention=False, dtype="bfloat16",
                speculative_use_rejection_sampling=False, speculative_adaptive=False,
                enable_lora=False, lora_paths=None, speculative_eagle_topk=None,
                speculative_num_steps=None, mamba_radix_cache_strategy=None,
                quantization=None, trust_remote_code=False, skip_tokenizer_init=False,
                json_model_override_args=None)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    target = build_tiny_target()
    target.save_pretrained(root / "target")
    build_tiny_drafter(target, block_size=8).save_pretrained(root / "draft")
    return root / "target", root / "draft", target


def test_the_trained_pair_validates():
    validate_server_args(_sa(ASSETS / "target", ASSETS / "drafter-domino"))
    check_resolved_server_args(_sa(ASSETS / "target", ASSETS / "drafter-domino",
                                   speculative_num_draft_tokens=16))


@pytest.mark.parametrize("n", [0, 1, 9, 64])
def test_block_size_outside_2_to_draft_block_is_refused(pair, n):
    target, draft, _ = pair
    with pytest.raises(DominoServerArgsError, match=r"block_size=8.*\[2, 8\]"):
        validate_server_args(_sa(target, draft, speculative_num_draft_tokens=n))


@pytest.mark.parametrize("n", [None, 1, 9])
def test_resolved_block_size_is_rechecked(pair, n):
    target, draft, _ = pair
    with pytest.raises(DominoServerArgsError, match="speculative_num_draft_tokens"):
        check_resolved_server_args(_sa(target, draft, speculative_num_draft_tokens=n))


def test_smaller_block_is_accepted(pair):
    target, draft, _ = pair
    validate_server_args(_sa(target, draft, speculative_num_draft_tokens=2))


def test_missing_draft_folder(pair, tmp_path):
    target, _, _ = pair
    with pytest.raises(DominoServerArgsError, match="speculative-draft-model-path"):
        validate_server_args(_sa(target, tmp_path / "empty_dir_missing_config"))


def test_mask_token_missing_with_skip_tokenizer_init(pair, tmp_path):
    target, draft, _ = pair
    d2 = tmp_path / "draft"
    d2.mkdir()
    cfg = json.loads((draft / "config.json").read_text())
    cfg["dflash_config"].pop("mask_token_id", None)
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DominoServerArgsError, match="mask_token_id"):
        validate_server_args(_sa(target, d2, skip_tokenizer_init=True))


@pytest.mark.parametrize("flag, value, match", [
    ("pp_size", 2, "pipeline"), ("enable_dp_attention", True, "dp-attention"),
    ("dtype", "int8", "--dtype"),
    ("enable_lora", True, "LoRA"), ("speculative_num_steps", 3, "num-steps"),
    ("mamba_radix_cache_strategy", "extra_buffer_lazy", "extra_buffer_lazy"),
])
def test_other_refused_server_args(pair, flag, value, match):
    target, draft, _ = pair
    with pytest.raises(DominoServerArgsError, match=match):
        validate_server_args(_sa(target, draft, **{flag: value}))


@pytest.mark.parametrize("name", ["prefix_gru.weight_hh_l0", "embed_proj.2.weight"])
def test_infinite_head_weight_is_refused(pair, tmp_path, name):
    _, draft, _ = pair
    d2 = tmp_path / "d"
    d2.mkdir()
    (d2 / "config.json").write_text((draft / "config.json").read_text())
    sd = load_file(str(draft / "model.safetensors"))
    sd[name] = sd[name].clone()
    sd[name].view(-1)[0] = float("inf")
    save_file(sd, str(d2 / "model.safetensors"))
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        DominoDrafter.from_pretrained(d2)


def test_empty_safetensors_file_is_refused(pair, tmp_path):
    _, draft, _ = pair
    d2 = tmp_path / "d"
    d2.mkdir()
    (d2 / "config.json").write_text((draft / "config.json").read_text())
    (d2 / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError):
        DominoDrafter.from_pretrained(d2)


def test_mask_token_id_beyond_vocab(pair, tmp_path):
    target, draft, _ = pair
    d2 = tmp_path / "d"
    d2.mkdir()
    cfg = json.loads((draft / "config.json").read_text())
    cfg["dflash_config"]["mask_token_id"] = cfg["vocab_size"] + 5
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DominoServerArgsError, match="mask_token_id"):
        validate_server_args(_sa(target, d2))


def test_weights_dtype_is_not_float8(pair):
    # the trained pair is bf16 and the server runs --dtype bfloat16 (not float16, see the
    # 2026-11-29 concurrency crash)
    cfg = json.loads((ASSETS / "drafter-domino/config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    assert torch.bfloat16 is getattr(torch, cfg["torch_dtype"])
