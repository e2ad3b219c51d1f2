"""The DFlash-style parallel block drafter and the Domino head, in plain PyTorch.

One forward pass of :class:`BlockDrafter` turns a block of K input embeddings (bonus token +
K-1 mask tokens, embedded with the *target's* embedding) into K hidden states. Target features
(hidden states of ``target_layer_ids``, concatenated) are projected by ``fc`` + ``hidden_norm``
and enter every draft layer as extra keys/values ("context"), with RoPE at their own positions.
Attention inside the block is non-causal; every block token sees all of its context.

:class:`DominoHead` is the GRU + low-rank logit correction: ``dL = W2 SiLU(W1 [h ; s])``.

:class:`DominoDrafter` holds both under exactly the public checkpoint weight names
(``layers.*``, ``fc``, ``hidden_norm``, ``norm``, ``prefix_gru.*``, ``embed_proj.{0,2}``);
it borrows the target's embedding and LM head and stores neither.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, DrafterConfig

logger = logging.getLogger(__name__)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin [..., head_dim] for integer positions [...] (Qwen3 default RoPE)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                             dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, hd]; cos/sin [B, T, hd]."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class DraftAttention(nn.Module):
    def __init__(self, cfg: DrafterConfig):
        super().__init__()
        hd = cfg.resolved_head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * hd, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * hd, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * hd, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * hd, cfg.hidden_size, bias=bias)
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps)

    def kv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        """Keys/values [B, n_kv, T, hd] of x [B, T, D] (norm + RoPE on k); rope: the fp32
        (cos, sin) [B, T, hd] of its positions (:meth:`DominoDrafter.rope`)."""
        b, t, _ = x.shape
        k = self.k_norm(self.k_proj(x).view(b, t, self.n_kv, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        cos, sin = (r.to(x.dtype) for r in rope)
        return apply_rope(k, cos, sin), v

    def forward(self, x, rope, ctx_k, ctx_v, attn_mask=None):
        """x [B, Q, D] block tokens, rope as in :meth:`kv`; ctx_k/ctx_v [B, n_kv, C, hd]
        precomputed context.

        attn_mask: bool [B or 1, 1, Q, C + Q] (True = may attend) or None (attend to everything:
        all of the context and the whole block, non-causal).
        """
        b, q_len, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, q_len, self.n_heads, self.head_dim)).transpose(1, 2)
        cos, sin = (r.to(x.dtype) for r in rope)
        q = apply_rope(q, cos, sin)
        k_blk, v_blk = self.kv(x, rope)
        k = torch.cat([ctx_k, k_blk], dim=2)
        v = torch.cat([ctx_v, v_blk], dim=2)
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, q_len, -1))


class DraftMLP(nn.Module):
    def __init__(self, cfg: DrafterConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DraftLayer(nn.Module):
    def __init__(self, cfg: DrafterConfig):
        super().__init__()
        self.self_attn = DraftAttention(cfg)
        self.mlp = DraftMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, rope, ctx_k, ctx_v, attn_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), rope, ctx_k, ctx_v, attn_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class DraftContextCache:
    """Per-layer context keys/values [B, n_kv, C, hd] of the target features seen so far."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]


class DominoDrafter(nn.Module):
    """Backbone (+ Domino head when ``cfg.is_domino``) under the public weight names."""

    def __init__(self, cfg: DrafterConfig):
        super().__init__()
        self.config = cfg
        d = cfg.hidden_size
        self.layers = nn.ModuleList(DraftLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.fc = nn.Linear(len(cfg.target_layer_ids) * d, d, bias=False)
        self.hidden_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.norm = RMSNorm(d, cfg.rms_norm_eps)
        if cfg.is_domino:
            self.prefix_gru = nn.GRU(d, cfg.gru_hidden_dim, num_layers=1, bias=False,
                                     batch_first=True)
            self.embed_proj = nn.Sequential(
                nn.Linear(d + cfg.gru_hidden_dim, cfg.rank, bias=False), nn.SiLU(),
                nn.Linear(cfg.rank, cfg.vocab_size, bias=False))

    @property
    def has_head(self) -> bool:
        return hasattr(self, "prefix_gru")

    # ---- backbone ---------------------------------------------------------------------------
    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 RoPE (cos, sin) [B, T, hd] of positions [B, T], computed once for every layer
        (each casts it to its input's dtype)."""
        cfg = self.config
        return rope_cos_sin(positions, cfg.resolved_head_dim, cfg.rope_theta, torch.float32)

    def project_context(self, target_features: torch.Tensor) -> torch.Tensor:
        """[B, T, L*D] concatenated target hidden states -> [B, T, D]."""
        return self.hidden_norm(self.fc(target_features))

    def context_kv(self, ctx: torch.Tensor, positions: torch.Tensor) -> DraftContextCache:
        """Per-layer context keys/values for projected features ctx [B, T, D] at positions."""
        rope = self.rope(positions)
        kv = [layer.self_attn.kv(ctx, rope) for layer in self.layers]
        return DraftContextCache([k for k, _ in kv], [v for _, v in kv])

    def extend_context(self, cache: DraftContextCache | None, target_features, positions):
        new = self.context_kv(self.project_context(target_features), positions)
        if cache is None:
            return new
        return DraftContextCache(
            [torch.cat([a, b], dim=2) for a, b in zip(cache.keys, new.keys)],
            [torch.cat([a, b], dim=2) for a, b in zip(cache.values, new.values)])

    def forward(self, block_embeds: torch.Tensor, positions: torch.Tensor,
                cache: DraftContextCache, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """block_embeds [B, Q, D] at positions [B, Q] -> post-norm hidden states [B, Q, D]."""
        x, rope = block_embeds, self.rope(positions)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, cache.keys[i], cache.values[i], attn_mask)
        return self.norm(x)

    # ---- Domino head --------------------------------------------------------------------------
    def head_weights(self) -> "HeadWeights | None":
        if not self.has_head:
            return None
        return HeadWeights(
            w_ih=self.prefix_gru.weight_ih_l0, w_hh=self.prefix_gru.weight_hh_l0,
            w1=self.embed_proj[0].weight, w2=self.embed_proj[2].weight)

    # ---- checkpoint io ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu",
                        require_head: bool = False) -> "DominoDrafter":
        """Load ``config.json`` + ``*.safetensors`` from a directory in the public format.

        A checkpoint whose config says ``projector_type: domino`` but that lacks all head
        weights loads as a plain DFlash drafter (with a warning); a partial head, an unknown
        weight, a missing backbone weight or a wrong shape raises naming the weight.
        """
        from safetensors.torch import load_file

        path = Path(path)
        cfg = DrafterConfig.from_file(path)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ConfigError(f"{path}: no *.safetensors weight file")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            try:
                state.update(load_file(str(f)))
            except Exception as exc:  # safetensors raises its own error types
                raise ConfigError(f"{f.name}: unreadable safetensors file ({exc})") from None
        state = {k.removeprefix("model."): v for k, v in state.items()}
        # non-parameter buffers some exporters save (RoPE tables): recomputed here, ignored
        buffers = sorted(k for k in state if k.endswith("rotary_emb.inv_freq"))
        if buffers:
            logger.warning("%s: ignoring %d non-parameter entries (%s)", path, len(buffers),
                           ", ".join(buffers[:3]) + (" ..." if len(buffers) > 3 else ""))
            state = {k: v for k, v in state.items() if k not in buffers}
        head_names = {"prefix_gru.weight_ih_l0", "prefix_gru.weight_hh_l0",
                      "embed_proj.0.weight", "embed_proj.2.weight"}
        present = head_names & state.keys()
        if cfg.is_domino and not present:
            if require_head:
                raise ConfigError(f"{path}: projector_type='domino' but no head weights "
                                  f"({sorted(head_names)})")
            logger.warning("%s: no Domino head weights; loading as a plain DFlash drafter", path)
            cfg = cfg.model_copy(update={"dflash_config": cfg.dflash_config.model_copy(
                update={"projector_type": None})})
        elif not cfg.is_domino and present:
            raise ConfigError(f"{sorted(present)}: head weights present but "
                              "dflash_config.projector_type is not 'domino'")
        with torch.device("meta"):
            model = cls(cfg)
        expected = dict(model.state_dict())
        missing = sorted(expected.keys() - state.keys())
        unexpected = sorted(state.keys() - expected.keys())
        if missing:
            raise ConfigError(f"missing weights: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            raise ConfigError(f"unexpected weights: {unexpected[:8]}")
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ConfigError(f"{name}: shape {tuple(tensor.shape)} in the checkpoint, "
                                  f"expected {tuple(expected[name].shape)}")
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ConfigError(f"{name}: contains NaN or Inf values")
        model.load_state_dict(state, assign=True)
        return model.to(device=device, dtype=dtype or model.fc.weight.dtype)

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu()
                 for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        cfg = self.config.to_hf_dict()
        cfg["torch_dtype"] = str(dtype or self.fc.weight.dtype).removeprefix("torch.")
        (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


@dataclass
class HeadWeights:
    """The Domino head's four matrices (PyTorch GRU gate order r, z, n).

    w_ih [3G, D], w_hh [3G, G], w1 [R, D + G] (acts on [h ; s]), w2 [V, R].
    """

    w_ih: torch.Tensor
    w_hh: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor

    @property
    def hidden_dim(self) -> int:
        return self.w_ih.shape[1]

    @property
    def gru_dim(self) -> int:
        return self.w_hh.shape[1]
