"""Drafter configuration, read from a Hugging Face ``config.json`` in the public Domino format.

The public format (e.g. ``Huang2020/Qwen3-8B-Domino-b16``) is a Qwen3 decoder config with
``architectures: ["DFlashDraftModel"]`` and a ``dflash_config`` section::

    {"architectures": ["DFlashDraftModel"], "model_type": "qwen3", "hidden_size": 4096, ...,
     "num_target_layers": 36, "block_size": 16,
     "dflash_config": {"block_size": 16, "target_layer_ids": [1, 9, 17, 25, 33],
                       "mask_token_id": 151669, "projector_type": "domino",
                       "gru_hidden_dim": 1024, "emb_dim": 256,
                       "shift_label": true, "pure_draft_prefix_len": 1}}

``projector_type`` absent (or null) means a plain DFlash drafter (no Domino head).
HF configs carry many keys we do not use (``transformers_version``, ``tie_word_embeddings`` ...),
so the top level ignores unknown keys; everything we use is validated, and every error names the
field and its value.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

logger = logging.getLogger(__name__)


def default_target_layer_ids(num_target_layers: int, num_draft_layers: int) -> list[int]:
    """The target layers a DFlash drafter reads when its config names none, as SGLang 0.5.17's
    DFlash worker picks them: one per draft layer; a single draft layer reads the middle target
    layer, several are spread evenly (rounded) from layer 1 to layer ``num_target_layers - 3``
    (e.g. 36 target and 5 draft layers: [1, 9, 17, 25, 33])."""
    if num_target_layers <= 0 or num_draft_layers <= 0:
        raise ConfigError(f"num_target_layers={num_target_layers}, num_hidden_layers="
                          f"{num_draft_layers}: both must be positive")
    if num_draft_layers == 1:
        return [num_target_layers // 2]
    first, last = 1, num_target_layers - 3
    if last < first:
        raise ConfigError(f"num_target_layers={num_target_layers}: the default "
                          "target_layer_ids need at least 4 target layers; set them explicitly")
    step = (last - first) / (num_draft_layers - 1)
    return [int(round(first + i * step)) for i in range(num_draft_layers)]

SUPPORTED_DTYPES = ("bfloat16", "float16", "float32")
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                  "float": "float32"}


class ConfigError(ValueError):
    """A configuration field is invalid or inconsistent; the message names the field."""


def _normalize_dtype(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).removeprefix("torch.")
    return _DTYPE_ALIASES.get(text, text)


class DFlashSection(BaseModel):
    """The ``dflash_config`` section of a drafter config."""

    model_config = ConfigDict(extra="allow", frozen=True)

    block_size: int | None = Field(default=None, ge=2)
    target_layer_ids: list[int] | None = None
    mask_token: str | None = None
    mask_token_id: int | None = Field(default=None, ge=0)
    projector_type: Literal["domino"] | None = None
    gru_hidden_dim: int | None = Field(default=None, gt=0)
    emb_dim: int | None = Field(default=None, gt=0)
    shift_label: bool = False
    pure_draft_prefix_len: int = Field(default=0, ge=0)


class DrafterConfig(BaseModel):
    """A DFlash / Domino drafter: a few Qwen3 decoder layers plus the optional Domino head.

    Shapes used throughout: D = ``hidden_size``, G = ``gru_hidden_dim``, R = ``emb_dim``
    (correction rank), V = ``vocab_size``, K = ``block_size``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    architectures: list[str] = ["DFlashDraftModel"]
    model_type: str = "qwen3"
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    vocab_size: int = Field(gt=0)
    rms_norm_eps: float = Field(default=1e-6, gt=0)
    rope_theta: float = Field(default=1_000_000.0, gt=0)
    max_position_embeddings: int = Field(default=32768, gt=0)
    attention_bias: bool = False
    hidden_act: Literal["silu"] = "silu"
    num_target_layers: int = Field(gt=0)
    block_size: int | None = Field(default=None, ge=2)
    dtype: str | None = None
    emb_dim: int | None = Field(default=None, gt=0)  # upstream duplicates it at the top level
    dflash_config: DFlashSection

    @model_validator(mode="before")
    @classmethod
    def _read_hf_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
        if "rope_theta" not in data and isinstance(rope, dict) and "rope_theta" in rope:
            data["rope_theta"] = rope["rope_theta"]
        if data.get("dtype") is None and data.get("torch_dtype") is not None:
            data["dtype"] = data["torch_dtype"]
        data["dtype"] = _normalize_dtype(data.get("dtype"))
        if "dflash_config" not in data:
            raise ConfigError("dflash_config: missing; a DFlash/Domino drafter config needs it")
        section = dict(data["dflash_config"] or {})
        if section.get("target_layer_ids") is None:
            if data.get("target_layer_ids") is not None:  # upstream also reads the top level
                section["target_layer_ids"] = data["target_layer_ids"]
            else:
                n_target, n_draft = data.get("num_target_layers"), data.get("num_hidden_layers")
                if not n_target or not n_draft:
                    raise ConfigError("dflash_config.target_layer_ids: missing, and without "
                                      "num_target_layers and num_hidden_layers the default "
                                      "cannot be derived")
                section["target_layer_ids"] = default_target_layer_ids(int(n_target),
                                                                       int(n_draft))
                logger.warning("dflash_config.target_layer_ids missing: using %s (one target "
                               "layer per draft layer, spread as SGLang's DFlash does)",
                               section["target_layer_ids"])
            data["dflash_config"] = section
        return data

    @model_validator(mode="after")
    def _check(self) -> "DrafterConfig":
        d = self.dflash_config
        if "DFlashDraftModel" not in self.architectures:
            raise ConfigError(
                f"architectures={self.architectures}: expected ['DFlashDraftModel'] "
                "(the public DFlash/Domino drafter format)")
        if self.dtype is not None and self.dtype not in SUPPORTED_DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}: supported are {list(SUPPORTED_DTYPES)}")
        if (self.block_size is not None and d.block_size is not None
                and self.block_size != d.block_size):
            raise ConfigError(f"block_size={self.block_size} differs from "
                              f"dflash_config.block_size={d.block_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"head_dim: unset and hidden_size={self.hidden_size} is not a "
                              f"multiple of num_attention_heads={self.num_attention_heads}")
        ids = self.target_layer_ids
        if not ids:
            raise ConfigError("dflash_config.target_layer_ids: must be a non-empty list")
        for i in ids:
            if not 0 <= i < self.num_target_layers:
                raise ConfigError(f"dflash_config.target_layer_ids contains {i}: outside "
                                  f"[0, num_target_layers={self.num_target_layers})")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"dflash_config.target_layer_ids={ids}: duplicate layer ids")
        if d.mask_token_id is not None and d.mask_token_id >= self.vocab_size:
            raise ConfigError(f"dflash_config.mask_token_id={d.mask_token_id}: outside the "
                              f"vocabulary [0, vocab_size={self.vocab_size})")
        if self.is_domino:
            # emb_dim may sit at the top level only (self.rank reads either)
            for name, value in (("gru_hidden_dim", self.gru_hidden_dim), ("emb_dim", self.rank)):
                if value is None:
                    raise ConfigError(f"dflash_config.{name}: required when "
                                      "projector_type='domino'")
            if d.emb_dim is not None and self.emb_dim is not None and d.emb_dim != self.emb_dim:
                raise ConfigError(f"emb_dim={self.emb_dim} differs from "
                                  f"dflash_config.emb_dim={d.emb_dim}")
            if d.pure_draft_prefix_len >= self.num_proposals:
                raise ConfigError(
                    f"dflash_config.pure_draft_prefix_len={d.pure_draft_prefix_len}: must be "
                    f"< the number of proposals per block ({self.num_proposals})")
        return self

    # ---- derived values -------------------------------------------------------------------
    @property
    def resolved_block_size(self) -> int:
        return self.dflash_config.block_size or self.block_size or 16

    @property
    def target_layer_ids(self) -> list[int]:
        return list(self.dflash_config.target_layer_ids or [])

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_domino(self) -> bool:
        return self.dflash_config.projector_type == "domino"

    @property
    def gru_hidden_dim(self) -> int | None:
        return self.dflash_config.gru_hidden_dim

    @property
    def rank(self) -> int | None:
        return self.dflash_config.emb_dim or self.emb_dim

    @property
    def mask_token_id(self) -> int | None:
        return self.dflash_config.mask_token_id

    @property
    def shift_label(self) -> bool:
        return self.dflash_config.shift_label

    @property
    def pure_draft_prefix_len(self) -> int:
        return self.dflash_config.pure_draft_prefix_len if self.is_domino else 0

    @property
    def num_proposals(self) -> int:
        """Draft tokens proposed per block: K - 1 (position 0 holds the bonus token)."""
        return self.resolved_block_size - 1

    # ---- io -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> "DrafterConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "DrafterConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise ConfigError(f"config.json: not found at {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def to_hf_dict(self) -> dict:
        """The HF ``config.json`` content (public format)."""
        out = self.model_dump(exclude_none=True, exclude={"dflash_config"})
        out["dflash_config"] = self.dflash_config.model_dump(exclude_none=True)
        out["block_size"] = self.resolved_block_size
        out["dflash_config"]["block_size"] = self.resolved_block_size
        out["head_dim"] = self.resolved_head_dim
        out["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.dtype is not None:
            out["torch_dtype"] = self.dtype
        return out

    def check_against_target(self, target: Any) -> None:
        """Check that this drafter fits a target model config (an HF config object or dict).

        Raises :class:`ConfigError` naming the field and both values on the first mismatch.
        """
        get = target.get if isinstance(target, dict) else (lambda k, d=None: getattr(target, k, d))
        text_cfg = get("text_config")
        if text_cfg is not None and get("hidden_size") is None:
            return self.check_against_target(text_cfg)
        for field in ("hidden_size", "vocab_size"):
            theirs = get(field)
            if theirs is not None and int(theirs) != getattr(self, field):
                raise ConfigError(f"{field}: draft has {getattr(self, field)}, "
                                  f"target has {theirs}")
        n_layers = get("num_hidden_layers")
        if n_layers is not None:
            if self.num_target_layers != int(n_layers):
                raise ConfigError(f"num_target_layers: draft has {self.num_target_layers}, "
                                  f"target.num_hidden_layers is {n_layers}")
            for i in self.target_layer_ids:
                if i >= int(n_layers):
                    raise ConfigError(f"dflash_config.target_layer_ids contains {i}: target "
                                      f"has num_hidden_layers={n_layers}")
        tdtype = _normalize_dtype(get("dtype") or get("torch_dtype"))
        if tdtype is not None and tdtype not in SUPPORTED_DTYPES:
            raise ConfigError(f"dtype: target has {tdtype!r}, supported are "
                              f"{list(SUPPORTED_DTYPES)}")
        if tdtype is not None and self.dtype is not None and tdtype != self.dtype:
            logger.warning("dtype: draft has %s, target has %s; the draft runs in the "
                           "target's dtype", self.dtype, tdtype)


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f"={value!r}"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}{shown}: {msg}")
    return "; ".join(parts)
