"""Strict configs of drafter training (``domino-train``) and of the small target's pre-training."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


class DrafterArch(BaseModel):
    """Shape of the drafter to train (the rest is copied from the target's config)."""

    model_config = _STRICT

    num_hidden_layers: int = Field(default=1, gt=0, description="draft decoder layers")
    intermediate_size: int | None = Field(default=None, gt=0,
                                          description="MLP width; default: the target's")
    block_size: int = Field(default=16, ge=2, description="K: bonus + K-1 mask tokens")
    target_layer_ids: list[int] | None = Field(
        default=None, description="target layers whose outputs feed the drafter; default: "
        "evenly spaced over all but the last layer")
    head: bool = Field(default=True, description="Domino head (GRU + low-rank correction); "
                       "false = plain DFlash")
    gru_hidden_dim: int = Field(default=128, gt=0, description="G")
    rank: int = Field(default=64, gt=0, description="R, the correction rank (emb_dim)")
    shift_label: bool = Field(default=True, description="proposal i reads hidden position i "
                              "(true, public Domino) or i+1 (false, public DFlash)")
    pure_draft_prefix_len: int = Field(default=1, ge=0,
                                       description="proposals without correction")
    mask_token_id: int | None = Field(default=None, ge=0,
                                      description="default: the tokenizer's mask token")

    @model_validator(mode="after")
    def _check(self) -> "DrafterArch":
        if self.head and self.pure_draft_prefix_len >= self.block_size - 1:
            raise ValueError(f"drafter.pure_draft_prefix_len={self.pure_draft_prefix_len}: must "
                             f"be < block_size - 1 = {self.block_size - 1}")
        return self


class LossConfig(BaseModel):
    model_config = _STRICT

    gamma: float = Field(default=7.0, gt=0, description="position decay exp(-(k-1)/gamma); "
                         "7 for block 16")
    curriculum: bool = Field(default=True, description="base-anchored curriculum; false = "
                             "CE_final only (ablation)")
    curriculum_frac: float = Field(default=0.5, ge=0, le=1, description="fraction of training "
                                   "over which lam falls linearly 1 -> 0")
    anchors_per_seq: int = Field(default=16, gt=0, description="blocks sampled per sequence")


class OptimConfig(BaseModel):
    model_config = _STRICT

    steps: int = Field(default=1000, gt=0, description="optimizer steps")
    batch_size: int = Field(default=16, gt=0, description="sequences per step")
    max_len: int = Field(default=512, gt=1, description="tokens per sequence (truncated)")
    lr: float = Field(default=6e-4, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine floor / lr")
    warmup_steps: int = Field(default=50, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, gt=0, description="max global grad norm")
    autocast: Literal["bf16", "none"] = Field(default="bf16", description="bf16 autocast "
                                              "(CUDA only; CPU runs fp32)")


class TrainConfig(BaseModel):
    """``domino-train``: train one drafter against a frozen HF target."""

    model_config = _STRICT

    target: str = Field(description="HF model dir of the target (with tokenizer)")
    data: str = Field(description="token dataset dir (part-*.npz: prompt + response, loss mask)")
    out_dir: str = Field(description="run dir: checkpoints, metrics, plots, exported drafter")
    drafter: DrafterArch = DrafterArch()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    seed: int = 0
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    log_every: int = Field(default=10, gt=0, description="steps between metric records")
    save_every: int = Field(default=200, gt=0, description="steps between checkpoints")
    resume: bool = Field(default=True, description="continue from out_dir/checkpoint.pt")
    time_limit_s: float | None = Field(default=None, gt=0, description="stop early (and "
                                       "export) after this many seconds")
    export_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    quiet: bool = False

    @property
    def export_dir(self) -> Path:
        return Path(self.out_dir) / "drafter"


class TargetTrainConfig(BaseModel):
    """Pre-training of the project's small Qwen3 target on a token stream."""

    model_config = _STRICT

    data: str = Field(description="token dataset dir of the training text")
    tokenizer: str = Field(description="HF tokenizer dir (saved beside the model)")
    out_dir: str
    vocab_size: int = Field(default=4096, gt=0)
    hidden_size: int = Field(default=256, gt=0)
    intermediate_size: int = Field(default=640, gt=0)
    num_hidden_layers: int = Field(default=4, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    num_key_value_heads: int = Field(default=2, gt=0)
    head_dim: int = Field(default=64, gt=0)
    max_position_embeddings: int = Field(default=2048, gt=0)
    seq_len: int = Field(default=512, gt=1)
    optim: OptimConfig = OptimConfig(steps=3000, batch_size=64, lr=3e-3, warmup_steps=200,
                                     weight_decay=0.1)
    seed: int = 0
    device: str = "auto"
    log_every: int = Field(default=50, gt=0)
    save_every: int = Field(default=1000, gt=0)
    time_limit_s: float | None = Field(default=None, gt=0)
    quiet: bool = False
