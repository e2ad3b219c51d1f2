"""Tiny random Qwen3 targets and drafters, for tests and demos (no downloads)."""

from __future__ import annotations

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from ..config import DrafterConfig
from ..core.drafter import DominoDrafter


def tiny_target_config(vocab_size: int = 128, hidden_size: int = 64, num_layers: int = 4,
                       num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 16,
                       intermediate_size: int = 128, eos_token_id: int = 1,
                       max_position_embeddings: int = 2048) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, head_dim=head_dim, rms_norm_eps=1e-6,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
        eos_token_id=eos_token_id, bos_token_id=None, pad_token_id=0,
        architectures=["Qwen3ForCausalLM"], dtype="float32",
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def build_tiny_target(seed: int = 0, scale: float = 1.0, **kw) -> Qwen3ForCausalLM:
    """A random tiny Qwen3. ``scale`` multiplies the LM head so that distributions are peaked
    (scale > 1) or flat (scale < 1)."""
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(tiny_target_config(**kw)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


def tiny_drafter_config(target_cfg, *, num_layers: int = 1, block_size: int = 8,
                        target_layer_ids: list[int] | None = None, domino: bool = True,
                        gru_hidden_dim: int = 32, rank: int = 16,
                        mask_token_id: int | None = None, shift_label: bool = True,
                        pure_draft_prefix_len: int = 1) -> DrafterConfig:
    n_t = target_cfg.num_hidden_layers
    dflash = {"block_size": block_size,
              "target_layer_ids": target_layer_ids or sorted({1, n_t // 2, n_t - 2} & set(range(n_t))),
              "mask_token_id": target_cfg.vocab_size - 1 if mask_token_id is None else mask_token_id}
    if domino:
        dflash.update(projector_type="domino", gru_hidden_dim=gru_hidden_dim, emb_dim=rank,
                      shift_label=shift_label, pure_draft_prefix_len=pure_draft_prefix_len)
    else:
        dflash.update(shift_label=False)
    return DrafterConfig.from_dict({
        "architectures": ["DFlashDraftModel"], "model_type": "qwen3",
        "hidden_size": target_cfg.hidden_size, "intermediate_size": target_cfg.intermediate_size,
        "num_hidden_layers": num_layers, "num_attention_heads": target_cfg.num_attention_heads,
        "num_key_value_heads": target_cfg.num_key_value_heads, "head_dim": target_cfg.head_dim,
        "vocab_size": target_cfg.vocab_size, "rms_norm_eps": target_cfg.rms_norm_eps,
        "rope_theta": 10000.0, "max_position_embeddings": target_cfg.max_position_embeddings,
        "num_target_layers": n_t, "block_size": block_size, "dtype": "float32",
        "dflash_config": dflash})


def build_tiny_drafter(target, seed: int = 1, head_scale: float = 1.0, **kw) -> DominoDrafter:
    torch.manual_seed(seed)
    drafter = DominoDrafter(tiny_drafter_config(target.config, **kw)).eval()
    if drafter.has_head and head_scale != 1.0:
        with torch.no_grad():
            drafter.embed_proj[2].weight.mul_(head_scale)
    return drafter
