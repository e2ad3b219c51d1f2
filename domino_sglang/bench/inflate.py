"""Inflate the trained tiny pair into a big Qwen3 shape without changing what it computes.

``python -m domino_sglang.bench.inflate --shape qwen3-8b --out DIR`` embeds the target and
drafters of ``assets/domino-tiny`` (Qwen3: hidden 256, 4 layers, 4 q / 2 kv heads of 64, MLP 640,
vocab 4096, tied embeddings; 1-layer drafters, GRU 128, rank 64, block 16) into a larger shape:
every tensor is allocated at the big shape, filled with zeros, and the tiny weights are copied
into a subspace. Every GEMM then costs what it costs at the big shape while the model computes
the tiny pair's function (fp32: logits over the real vocabulary within ~4e-5; the drafters keep
their acceptance). The rules:

* residual RMSNorms: weight x sqrt(h0/H), global ``rms_norm_eps`` = eps_tiny * h0 / H;
* per-head q_norm / k_norm: q_norm / sqrt(hd/hd0) (the softmax scale 1/sqrt(hd) is offset);
* RoPE pair (i, hd0/2 + i) -> (f*i, hd/2 + f*i) with f = hd/hd0, ``rope_theta`` kept;
* GQA: tiny query head h -> big head (h // r0) * r + h % r0, kv head k -> k;
* tiny layer l at big layer ``layer_map[l]``, all other layers zero (identity on the residual);
* vocabulary: embedding rows < V0 carry a constant c in one spare residual dimension that no
  layer reads or writes; the untied LM head's rows >= V0 read it with a large negative weight, so
  padded tokens get hugely negative logits and are never chosen;
* drafter: ``fc`` column blocks follow ``target_layer_ids`` (tiny id l -> the big layer holding
  tiny layer l, or a zero layer right after it), GRU units >= G0 have zero weights and stay 0,
  ``embed_proj.0`` reads [h[:h0] ; s[:G0]], ``embed_proj.2`` rows < V0.

Examples::

    python -m domino_sglang.bench.inflate --shape qwen3-8b --out /tmp/inflated-8b --device cuda
    python -m domino_sglang.bench.inflate --shape cpu-demo --out runs/cpu-demo --dtype float32

Outputs: ``OUT/target/`` (HF ``Qwen3ForCausalLM`` dir with the tiny tokenizer and chat
template), ``OUT/drafter-domino/``, ``OUT/drafter-dflash/`` (and
``OUT/drafter-domino-nocurriculum/`` with ``--drafters all``) in the public DFlash/Domino
format, and ``OUT/inflate.json`` (source, preset, resolved shapes, layer placement, constants,
wall time). Details and measurements: ``docs/inflate.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

logger = logging.getLogger(__name__)

DEFAULT_SRC = Path(__file__).resolve().parents[2] / "assets" / "domino-tiny"
DRAFTER_NAMES = ("drafter-domino", "drafter-dflash", "drafter-domino-nocurriculum")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# files of the tiny target dir copied verbatim (tokenizer, chat template, generation config)
_TARGET_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "special_tokens_map.json", "vocab.json", "merges.txt", "generation_config.json")
# a safetensors shard holds at most this many bytes (HF's usual 4-5 GB shards)
MAX_SHARD_BYTES = 4 * 2**30


class InflateError(ValueError):
    """A bad argument, shape or source checkpoint; the message names it."""


@dataclass(frozen=True)
class TargetShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int


@dataclass(frozen=True)
class DrafterShape:
    num_layers: int
    num_target_layers: int  # hidden states fed into fc (len(target_layer_ids))
    gru_hidden_dim: int
    rank: int  # emb_dim
    block_size: int = 16
    intermediate_size: int | None = None  # None: the target's
    target_layer_ids: tuple[int, ...] | None = None  # None: DFlash's even spread


@dataclass(frozen=True)
class InflateShape:
    name: str
    target: TargetShape
    drafter: DrafterShape


PRESETS: dict[str, InflateShape] = {
    # Qwen3-8B and the public Domino drafter (Huang2020/Qwen3-8B-Domino-b16)
    "qwen3-8b": InflateShape("qwen3-8b", TargetShape(4096, 36, 32, 8, 128, 12288, 151936),
                             DrafterShape(5, 5, 1024, 256, 16)),
    # the unit-test shape: 63 M-parameter target, 2-layer drafter (fp32: 252 + 72 MB)
    "mid": InflateShape("mid", TargetShape(1024, 8, 8, 2, 128, 1024, 8192),
                        DrafterShape(2, 4, 256, 128, 16)),
    # CPU demo: ~113 M-parameter target (450 MB fp32, 225 MB bf16: weights far beyond the
    # caches, so a decode step is memory-bound like a real LLM's) with a light 1-layer drafter
    # the CLI demo's pair: ~0.8 GB in bf16, so that a CPU decode step is bound by reading the
    # weights (2 cores: 1, 4 and 16-token forwards all ~62-66 ms), as a GPU step of a real LLM
    "cpu-demo": InflateShape("cpu-demo", TargetShape(2048, 8, 16, 4, 128, 6144, 8192),
                             DrafterShape(1, 3, 128, 64, 16, intermediate_size=1024)),
}


@dataclass(frozen=True)
class PadConstants:
    """The spare-channel trick that keeps padded tokens out: embedding rows < V0 hold
    ``channel`` in the spare dimension, the final norms scale it by ``norm_gain``, and LM-head
    rows >= V0 read it with ``-lm_head_weight``. Padded logit ~ -channel * gain * weight *
    sqrt(H/h0) / rms (rms: the tiny model's final residual RMS, ~1-200)."""

    channel: float
    norm_gain: float
    lm_head_weight: float


# fp32/bf16: the values checked in INFLATION.md (padded logits <= -1.3e5). fp16 tops out at
# 65504, so the product moves into a power-of-two norm gain (padded logit ~ -2100 sqrt(H/h0)/rms,
# finite for rms >= 0.13 and still below -40 at rms 200)
PAD_CONSTANTS = {torch.float32: PadConstants(1e-3, 1.0, 1e9),
                 torch.bfloat16: PadConstants(1e-3, 1.0, 1e9),
                 torch.float16: PadConstants(1e-3, 64.0, 32768.0)}


# ---- layer placement ------------------------------------------------------------------------
def spread_layer_ids(num_target_layers: int, count: int) -> list[int]:
    """DFlash's default target layers: ``count`` ids spread evenly over [1, L - 3]
    (Qwen3-8B, 5 ids: [1, 9, 17, 25, 33])."""
    if count == 1:
        return [num_target_layers // 2]
    start, end = 1, num_target_layers - 3
    ids = [int(round(start + i * (end - start) / (count - 1))) for i in range(count)]
    if end < start or len(set(ids)) != count:
        raise InflateError(f"drafter.num_target_layers={count}: cannot spread over a target of "
                           f"{num_target_layers} layers; pass --draft-target-layer-ids")
    return ids


@dataclass(frozen=True)
class Placement:
    layer_map: list[int]  # tiny target layer l -> big target layer
    target_layer_ids: list[int]  # the big drafter's ids (fc column-block order)
    fc_blocks: list[int]  # tiny fc block j (tiny id j) -> big fc block


def place_layers(n_tiny: int, n_big: int, tiny_ids: list[int], big_ids: list[int]) -> Placement:
    """Put tiny layer l at a big layer and the tiny drafter ids among ``big_ids``.

    The drafter reads the hidden state after layer ``id``. Tiny id t sits at a big id m(t) with
    p(t) <= m(t) < p(t + 1) (p: the layer map), since the layers in between are zero and leave
    the residual unchanged; each tiny id gets the big id closest to its relative depth.
    """
    if n_big < n_tiny:
        raise InflateError(f"target.num_layers={n_big}: fewer than the tiny target's {n_tiny}")
    if len(big_ids) < len(tiny_ids):
        raise InflateError(f"drafter.num_target_layers={len(big_ids)}: fewer than the tiny "
                           f"drafter's {len(tiny_ids)} target layers {tiny_ids}")
    if sorted(big_ids) != list(big_ids) or len(set(big_ids)) != len(big_ids):
        raise InflateError(f"drafter.target_layer_ids={list(big_ids)}: must be strictly increasing")
    if any(not 0 <= i < n_big for i in big_ids):
        raise InflateError(f"drafter.target_layer_ids={list(big_ids)}: outside [0, {n_big})")
    order = sorted(range(len(tiny_ids)), key=lambda j: tiny_ids[j])
    chosen: dict[int, int] = {}  # tiny id -> index into big_ids
    prev = -1
    for rank_, j in enumerate(order):
        t = tiny_ids[j]
        want = (t + 1) * n_big / n_tiny - 1
        hi = len(big_ids) - (len(order) - rank_)
        cands = range(prev + 1, hi + 1)
        k = min(cands, key=lambda c: abs(big_ids[c] - want))
        chosen[t], prev = k, k
    # the last tiny layer's output is post-final-norm in HF's hidden_states: keep it last
    if n_tiny - 1 in chosen and big_ids[chosen[n_tiny - 1]] != n_big - 1:
        raise InflateError(f"tiny target_layer_ids include the last layer {n_tiny - 1}: the big "
                           f"drafter.target_layer_ids must then end with {n_big - 1}")
    layer_map: list[int] = []
    for layer in range(n_tiny):
        lo = layer_map[-1] + 1 if layer_map else 0
        if layer - 1 in chosen:
            lo = max(lo, big_ids[chosen[layer - 1]] + 1)
        hi = big_ids[chosen[layer]] if layer in chosen else n_big - (n_tiny - layer)
        default = int(round(layer * n_big / n_tiny))
        if lo > hi:
            raise InflateError(f"drafter.target_layer_ids={list(big_ids)}: no placement of tiny "
                               f"layer {layer} over {n_big} layers fits tiny ids {tiny_ids}")
        layer_map.append(min(max(default, lo), hi))
    return Placement(layer_map, list(big_ids), [chosen[t] for t in tiny_ids])


# ---- tensor plans ---------------------------------------------------------------------------
Fill = Callable[[torch.Tensor], None]


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    fill: Fill | None = None  # writes the tiny blocks into a zero tensor (None: stays zero)


@dataclass
class _Dims:
    """Index maps from tiny to big dimensions."""

    h0: int
    H: int
    hd0: int
    hd: int
    q_rows: torch.Tensor  # tiny q_proj row -> big q_proj row (also o_proj columns)
    kv_rows: torch.Tensor  # tiny k/v_proj row -> big row
    head_dims: torch.Tensor  # tiny head dim -> big head dim

    @property
    def norm_scale(self) -> float:
        return math.sqrt(self.h0 / self.H)

    @property
    def qk_scale(self) -> float:
        return math.sqrt(self.hd / self.hd0)


def _dims(tiny: dict, shape: TargetShape, device) -> _Dims:
    hd0, hd = tiny["head_dim"], shape.head_dim
    nq0, nkv0 = tiny["num_attention_heads"], tiny["num_key_value_heads"]
    f = hd // hd0
    half0 = torch.arange(hd0 // 2, device=device)
    head_dims = torch.cat([f * half0, hd // 2 + f * half0])
    r0, r = nq0 // nkv0, shape.num_heads // shape.num_kv_heads
    h = torch.arange(nq0, device=device)
    big_q_heads = (h // r0) * r + h % r0
    q_rows = (big_q_heads[:, None] * hd + head_dims[None]).reshape(-1)
    kv_rows = (torch.arange(nkv0, device=device)[:, None] * hd + head_dims[None]).reshape(-1)
    return _Dims(tiny["hidden_size"], shape.hidden_size, hd0, hd, q_rows, kv_rows, head_dims)


def _put(big: torch.Tensor, rows, cols, block: torch.Tensor) -> None:
    """big[rows, cols] = block (rows/cols: a slice or a 1-D index tensor)."""
    block = block.to(device=big.device, dtype=big.dtype)
    if isinstance(rows, torch.Tensor) and isinstance(cols, torch.Tensor):
        big[rows[:, None], cols[None, :]] = block
    else:
        big[rows, cols] = block


def _layer_plans(prefix: str, tw: Callable[[str], torch.Tensor], tprefix: str, dims: _Dims,
                 heads: tuple[int, int], inter: int, tiny_present: bool) -> list[TensorPlan]:
    """One decoder layer (attention + MLP + both norms); ``tiny_present=False``: all zero."""
    H, hd = dims.H, dims.hd
    nq, nkv = heads
    h0 = dims.h0
    s = slice(0, h0)

    def w(name):
        return tw(tprefix + name)

    def fill(fn):
        return fn if tiny_present else None

    return [
        TensorPlan(prefix + "input_layernorm.weight", (H,),
                   fill(lambda t: t[:h0].copy_(w("input_layernorm.weight") * dims.norm_scale))),
        TensorPlan(prefix + "post_attention_layernorm.weight", (H,),
                   fill(lambda t: t[:h0].copy_(w("post_attention_layernorm.weight")
                                               * dims.norm_scale))),
        TensorPlan(prefix + "self_attn.q_proj.weight", (nq * hd, H),
                   fill(lambda t: _put(t, dims.q_rows, s, w("self_attn.q_proj.weight")))),
        TensorPlan(prefix + "self_attn.k_proj.weight", (nkv * hd, H),
                   fill(lambda t: _put(t, dims.kv_rows, s, w("self_attn.k_proj.weight")))),
        TensorPlan(prefix + "self_attn.v_proj.weight", (nkv * hd, H),
                   fill(lambda t: _put(t, dims.kv_rows, s, w("self_attn.v_proj.weight")))),
        TensorPlan(prefix + "self_attn.o_proj.weight", (H, nq * hd),
                   fill(lambda t: _put(t, s, dims.q_rows, w("self_attn.o_proj.weight")))),
        # the per-head norm over hd (hd0 nonzero) grows the row by sqrt(hd/hd0); dividing q by
        # it also offsets the softmax scale 1/sqrt(hd) vs 1/sqrt(hd0)
        TensorPlan(prefix + "self_attn.q_norm.weight", (hd,),
                   fill(lambda t: t.index_copy_(0, dims.head_dims, (
                       w("self_attn.q_norm.weight") / dims.qk_scale).to(t.dtype)))),
        TensorPlan(prefix + "self_attn.k_norm.weight", (hd,),
                   fill(lambda t: t.index_copy_(0, dims.head_dims,
                                                w("self_attn.k_norm.weight").to(t.dtype)))),
        TensorPlan(prefix + "mlp.gate_proj.weight", (inter, H),
                   fill(lambda t: _put(t, slice(0, w("mlp.gate_proj.weight").shape[0]), s,
                                       w("mlp.gate_proj.weight")))),
        TensorPlan(prefix + "mlp.up_proj.weight", (inter, H),
                   fill(lambda t: _put(t, slice(0, w("mlp.up_proj.weight").shape[0]), s,
                                       w("mlp.up_proj.weight")))),
        TensorPlan(prefix + "mlp.down_proj.weight", (H, inter),
                   fill(lambda t: _put(t, s, slice(0, w("mlp.down_proj.weight").shape[1]),
                                       w("mlp.down_proj.weight")))),
    ]


def _final_norm_fill(tiny_norm: Callable[[], torch.Tensor], dims: _Dims, spare: int,
                     gain: float) -> Fill:
    def fill(t):
        t[: dims.h0] = (tiny_norm() * dims.norm_scale).to(t.dtype)
        t[spare] = gain
    return fill


def target_plans(tiny_cfg: dict, tw: Callable[[str], torch.Tensor], shape: TargetShape,
                 placement: Placement, dims: _Dims, pad: PadConstants) -> list[TensorPlan]:
    H, V = shape.hidden_size, shape.vocab_size
    V0, h0 = tiny_cfg["vocab_size"], tiny_cfg["hidden_size"]
    spare = H - 1
    tied = tiny_cfg.get("tie_word_embeddings", True)

    def embed_fill(t):
        t[:V0, :h0] = tw("model.embed_tokens.weight").to(t.dtype)
        t[:V0, spare] = pad.channel

    def head_fill(t):
        t[:V0, :h0] = tw("model.embed_tokens.weight" if tied else "lm_head.weight").to(t.dtype)
        t[V0:, spare] = -pad.lm_head_weight

    plans = [TensorPlan("model.embed_tokens.weight", (V, H), embed_fill)]
    where = {big: tiny for tiny, big in enumerate(placement.layer_map)}
    for i in range(shape.num_layers):
        tiny = where.get(i)
        plans += _layer_plans(f"model.layers.{i}.", tw, f"model.layers.{tiny}.", dims,
                              (shape.num_heads, shape.num_kv_heads), shape.intermediate_size,
                              tiny is not None)
    plans.append(TensorPlan("model.norm.weight", (H,),
                            _final_norm_fill(lambda: tw("model.norm.weight"), dims, spare,
                                             pad.norm_gain)))
    plans.append(TensorPlan("lm_head.weight", (V, H), head_fill))
    return plans


def drafter_plans(tiny_cfg: dict, dw: Callable[[str], torch.Tensor], has_head: bool,
                  shape: InflateShape, placement: Placement, dims: _Dims,
                  pad: PadConstants) -> list[TensorPlan]:
    t, d = shape.target, shape.drafter
    H, h0 = t.hidden_size, dims.h0
    spare = H - 1
    n_tiny = tiny_cfg["num_hidden_layers"]
    inter = d.intermediate_size or t.intermediate_size
    tiny_ids = tiny_cfg["dflash_config"]["target_layer_ids"]
    n_ids = len(placement.target_layer_ids)

    def fc_fill(big):
        tiny = dw("fc.weight")
        for j, k in enumerate(placement.fc_blocks):
            big[:h0, k * H: k * H + h0] = tiny[:, j * h0:(j + 1) * h0].to(big.dtype)

    plans = [TensorPlan("fc.weight", (H, n_ids * H), fc_fill),
             TensorPlan("hidden_norm.weight", (H,),
                        lambda x: x[:h0].copy_(dw("hidden_norm.weight") * dims.norm_scale)),
             TensorPlan("norm.weight", (H,),
                        _final_norm_fill(lambda: dw("norm.weight"), dims, spare, pad.norm_gain))]
    if len(tiny_ids) > n_ids:
        raise InflateError(f"drafter.num_target_layers={n_ids} < the tiny drafter's "
                           f"{len(tiny_ids)}")
    # tiny drafter layer j at big layer round(j * n / n_tiny): zero layers are the identity
    where = {int(round(j * d.num_layers / n_tiny)): j for j in range(n_tiny)}
    for i in range(d.num_layers):
        tiny = where.get(i)
        plans += _layer_plans(f"layers.{i}.", dw, f"layers.{tiny}.", dims,
                              (t.num_heads, t.num_kv_heads), inter, tiny is not None)
    if has_head:
        G0 = tiny_cfg["dflash_config"]["gru_hidden_dim"]
        G, R = d.gru_hidden_dim, d.rank

        def gru_rows(device):
            # gate blocks r, z, n: tiny rows [g*G0, (g+1)*G0) -> big [g*G, g*G + G0)
            g0 = torch.arange(G0, device=device)
            return torch.cat([g * G + g0 for g in range(3)])

        plans += [
            TensorPlan("prefix_gru.weight_ih_l0", (3 * G, H),
                       lambda x: _put(x, gru_rows(x.device), slice(0, h0),
                                      dw("prefix_gru.weight_ih_l0"))),
            TensorPlan("prefix_gru.weight_hh_l0", (3 * G, G),
                       lambda x: _put(x, gru_rows(x.device), slice(0, G0),
                                      dw("prefix_gru.weight_hh_l0"))),
            TensorPlan("embed_proj.0.weight", (R, H + G), lambda x: (
                _put(x, slice(0, dw("embed_proj.0.weight").shape[0]), slice(0, h0),
                     dw("embed_proj.0.weight")[:, :h0]),
                _put(x, slice(0, dw("embed_proj.0.weight").shape[0]), slice(H, H + G0),
                     dw("embed_proj.0.weight")[:, h0:]))),
            TensorPlan("embed_proj.2.weight", (t.vocab_size, R), lambda x: _put(
                x, slice(0, dw("embed_proj.2.weight").shape[0]),
                slice(0, dw("embed_proj.2.weight").shape[1]), dw("embed_proj.2.weight"))),
        ]
    return plans


# ---- configs --------------------------------------------------------------------------------
def target_config(tiny: dict, shape: TargetShape, dtype: str,
                  max_position_embeddings: int | None = None) -> dict:
    cfg = dict(tiny)
    if max_position_embeddings is not None:  # RoPE needs no table: any length works
        cfg["max_position_embeddings"] = max_position_embeddings
    h0, H = tiny["hidden_size"], shape.hidden_size
    cfg.update(hidden_size=H, intermediate_size=shape.intermediate_size,
               num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
               num_key_value_heads=shape.num_kv_heads, head_dim=shape.head_dim,
               vocab_size=shape.vocab_size, rms_norm_eps=tiny["rms_norm_eps"] * h0 / H,
               tie_word_embeddings=False, dtype=dtype, max_window_layers=shape.num_layers,
               layer_types=["full_attention"] * shape.num_layers)
    cfg.pop("torch_dtype", None)
    return cfg


def drafter_config(tiny: dict, shape: InflateShape, placement: Placement, dtype: str,
                   has_head: bool, tiny_h0: int,
                   max_position_embeddings: int | None = None) -> dict:
    t, d = shape.target, shape.drafter
    cfg = dict(tiny)
    if max_position_embeddings is not None:
        cfg["max_position_embeddings"] = max_position_embeddings
    dfl = dict(tiny["dflash_config"])
    dfl.update(block_size=d.block_size, target_layer_ids=placement.target_layer_ids)
    if has_head:
        dfl.update(gru_hidden_dim=d.gru_hidden_dim, emb_dim=d.rank)
    cfg.update(hidden_size=t.hidden_size,
               intermediate_size=d.intermediate_size or t.intermediate_size,
               num_hidden_layers=d.num_layers, num_attention_heads=t.num_heads,
               num_key_value_heads=t.num_kv_heads, head_dim=t.head_dim, vocab_size=t.vocab_size,
               rms_norm_eps=tiny["rms_norm_eps"] * tiny_h0 / t.hidden_size,
               num_target_layers=t.num_layers, block_size=d.block_size, dtype=dtype,
               torch_dtype=dtype, dflash_config=dfl)
    if "emb_dim" in cfg and has_head:
        cfg["emb_dim"] = d.rank
    return cfg


# ---- checks ---------------------------------------------------------------------------------
def check_shape(tiny_t: dict, tiny_d: dict, shape: InflateShape) -> None:
    """Raise :class:`InflateError` naming the field when the big shape cannot hold the tiny."""
    t, d = shape.target, shape.drafter
    need = [("target.hidden_size", t.hidden_size, tiny_t["hidden_size"] + 1,
             "tiny hidden + 1 spare dimension"),
            ("target.num_layers", t.num_layers, tiny_t["num_hidden_layers"], "tiny layers"),
            ("target.num_kv_heads", t.num_kv_heads, tiny_t["num_key_value_heads"], "tiny kv heads"),
            ("target.intermediate_size", t.intermediate_size, tiny_t["intermediate_size"],
             "tiny MLP"),
            ("target.vocab_size", t.vocab_size, tiny_t["vocab_size"], "tiny vocabulary"),
            ("drafter.num_layers", d.num_layers, tiny_d["num_hidden_layers"],
             "tiny drafter layers"),
            ("drafter.intermediate_size", d.intermediate_size or t.intermediate_size,
             tiny_d["intermediate_size"], "tiny drafter MLP"),
            ("drafter.gru_hidden_dim", d.gru_hidden_dim,
             tiny_d["dflash_config"].get("gru_hidden_dim") or 1, "tiny GRU"),
            ("drafter.rank", d.rank, tiny_d["dflash_config"].get("emb_dim") or 1, "tiny rank")]
    for name, value, least, what in need:
        if value < least:
            raise InflateError(f"{name}={value}: must be >= {least} ({what})")
    hd0 = tiny_t["head_dim"]
    if t.head_dim % hd0 or t.head_dim // hd0 < 1:
        raise InflateError(f"target.head_dim={t.head_dim}: must be a multiple of the tiny "
                           f"head_dim {hd0} (RoPE pairs map i -> (head_dim/{hd0}) * i)")
    if t.num_heads % t.num_kv_heads:
        raise InflateError(f"target.num_heads={t.num_heads}: not a multiple of "
                           f"target.num_kv_heads={t.num_kv_heads}")
    r0 = tiny_t["num_attention_heads"] // tiny_t["num_key_value_heads"]
    if t.num_heads // t.num_kv_heads < r0:
        raise InflateError(f"target.num_heads={t.num_heads}: the query-per-kv ratio "
                           f"{t.num_heads // t.num_kv_heads} is below the tiny ratio {r0}")
    if d.block_size != tiny_d["dflash_config"].get("block_size", tiny_d.get("block_size")):
        raise InflateError(f"drafter.block_size={d.block_size}: the tiny drafters were trained "
                           f"with {tiny_d['dflash_config'].get('block_size')}")
    for name in ("hidden_size", "head_dim", "num_attention_heads", "num_key_value_heads"):
        if tiny_d[name] != tiny_t[name]:
            raise InflateError(f"tiny drafter {name}={tiny_d[name]} differs from the tiny "
                               f"target's {tiny_t[name]}")


def resolve_shape(name: str, **overrides) -> InflateShape:
    """A preset with fields overridden (``hidden_size=...`` for the target,
    ``draft_<field>=...`` for the drafter; None values are ignored)."""
    if name not in PRESETS:
        raise InflateError(f"--shape {name!r}: unknown; presets are {sorted(PRESETS)}")
    shape = PRESETS[name]
    t = {k: v for k, v in overrides.items() if v is not None and not k.startswith("draft_")}
    d = {k.removeprefix("draft_"): v for k, v in overrides.items()
         if v is not None and k.startswith("draft_")}
    for key, value in list(t.items()) + list(d.items()):
        if key != "target_layer_ids" and (not isinstance(value, int) or value <= 0):
            raise InflateError(f"{key}={value}: must be a positive integer")
    try:
        return InflateShape(name, replace(shape.target, **t), replace(shape.drafter, **d))
    except TypeError as exc:
        raise InflateError(f"unknown shape field: {exc}") from None


# ---- io -------------------------------------------------------------------------------------
def _read_dir(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    if not (path / "config.json").is_file():
        raise InflateError(f"--src: {path} has no config.json")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InflateError(f"--src: {path} has no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return json.loads((path / "config.json").read_text()), state


def _getter(state: dict[str, torch.Tensor], device, where: Path) -> Callable[[str], torch.Tensor]:
    cache: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        if name not in cache:
            key = name if name in state else "model." + name
            if key not in state:
                raise InflateError(f"{where}: missing weight {name}")
            cache[name] = state[key].to(device=device, dtype=torch.float32)
        return cache[name]
    return get


def write_plans(plans: list[TensorPlan], out: Path, dtype: torch.dtype, device, *,
                desc: str, quiet: bool = False, max_shard_bytes: int = MAX_SHARD_BYTES) -> int:
    """Build each tensor (zeros at the big shape + the tiny blocks) and save safetensors shards
    one at a time (peak host memory: one shard). Returns the bytes written."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    item = torch.empty((), dtype=dtype).element_size()
    sizes = [math.prod(p.shape) * item for p in plans]
    shards: list[list[int]] = [[]]
    acc = 0
    for i, n in enumerate(sizes):
        if shards[-1] and acc + n > max_shard_bytes:
            shards.append([])
            acc = 0
        shards[-1].append(i)
        acc += n
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))])
    weight_map = {}
    bar = tqdm(total=len(plans), desc=desc, unit="tensor", disable=quiet or None)
    for fname, idx in zip(names, shards):
        tensors = {}
        for i in idx:
            p = plans[i]
            t = torch.zeros(p.shape, dtype=dtype, device=device)
            if p.fill is not None:  # an all-zero tensor needs no finiteness check
                p.fill(t)
                if not torch.isfinite(t).all():
                    raise InflateError(f"{p.name}: non-finite values in {dtype}")
            tensors[p.name] = t.cpu()
            weight_map[p.name] = fname
            bar.update(1)
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        del tensors
    bar.close()
    for stale in out.glob("model*.safetensors"):
        if stale.name not in names:
            stale.unlink()
    index = out / "model.safetensors.index.json"
    if len(names) > 1:
        index.write_text(json.dumps({"metadata": {"total_size": sum(sizes)},
                                     "weight_map": weight_map}, indent=2) + "\n")
    elif index.exists():
        index.unlink()
    return sum(sizes)


@dataclass
class InflateResult:
    out: Path
    shape: InflateShape
    placement: Placement
    drafters: dict[str, Path] = field(default_factory=dict)
    bytes_written: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0


def inflate_pair(src: str | Path, out: str | Path, shape: str | InflateShape = "qwen3-8b", *,
                 dtype: str | torch.dtype = "bfloat16", device: str = "cpu",
                 drafters: tuple[str, ...] = ("drafter-domino", "drafter-dflash"),
                 max_position_embeddings: int | None = None,
                 quiet: bool = True) -> InflateResult:
    """Embed the tiny pair under ``src`` (``target/`` + drafter dirs) into ``shape`` and write
    ``out/target``, ``out/<drafter>`` and ``out/inflate.json``. See the module docstring."""
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InflateError(f"--src: {src} is not a directory")
    if isinstance(shape, str):
        shape = resolve_shape(shape)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InflateError(f"--dtype {dtype!r}: choose from {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    dtype_name = str(dtype).removeprefix("torch.")
    if dtype not in PAD_CONSTANTS:
        raise InflateError(f"--dtype {dtype_name}: choose from {sorted(DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InflateError(f"--device {device}: CUDA is not available")
    for name in drafters:
        if not (src / name).is_dir():
            raise InflateError(f"--drafters: {src / name} does not exist")
    if max_position_embeddings is not None and max_position_embeddings < 1:
        raise InflateError(f"--max-position-embeddings {max_position_embeddings}: must be >= 1")
    if not drafters:
        raise InflateError("--drafters: at least one drafter is needed (the layer placement "
                           "follows its target_layer_ids)")
    pad = PAD_CONSTANTS[dtype]

    tiny_t, t_state = _read_dir(src / "target")
    tiny_ds = {name: _read_dir(src / name) for name in drafters}
    tiny_ids = tiny_ds[drafters[0]][0]["dflash_config"]["target_layer_ids"]
    for name, (cfg, _) in tiny_ds.items():
        check_shape(tiny_t, cfg, shape)
        if cfg["dflash_config"]["target_layer_ids"] != tiny_ids:
            raise InflateError(f"{name}: target_layer_ids "
                               f"{cfg['dflash_config']['target_layer_ids']} differ from "
                               f"{drafters[0]}'s {tiny_ids} (one target placement)")
    big_ids = list(shape.drafter.target_layer_ids or
                   spread_layer_ids(shape.target.num_layers, shape.drafter.num_target_layers))
    if len(big_ids) != shape.drafter.num_target_layers:
        raise InflateError(f"drafter.target_layer_ids={big_ids}: expected "
                           f"drafter.num_target_layers={shape.drafter.num_target_layers} ids")
    placement = place_layers(tiny_t["num_hidden_layers"], shape.target.num_layers, tiny_ids,
                             big_ids)
    dims = _dims(tiny_t, shape.target, device)
    res = InflateResult(out, shape, placement)

    tdir = out / "target"
    tw = _getter(t_state, device, src / "target")
    res.bytes_written["target"] = write_plans(
        target_plans(tiny_t, tw, shape.target, placement, dims, pad), tdir, dtype, device,
        desc="target", quiet=quiet)
    (tdir / "config.json").write_text(
        json.dumps(target_config(tiny_t, shape.target, dtype_name, max_position_embeddings),
                   indent=2) + "\n")
    for fname in _TARGET_FILES:
        if (src / "target" / fname).is_file():
            shutil.copy2(src / "target" / fname, tdir / fname)

    for name, (cfg, state) in tiny_ds.items():
        has_head = (cfg["dflash_config"].get("projector_type") == "domino"
                    and any(k.endswith("prefix_gru.weight_ih_l0") for k in state))
        ddir = out / name
        dw = _getter(state, device, src / name)
        res.bytes_written[name] = write_plans(
            drafter_plans(cfg, dw, has_head, shape, placement, dims, pad), ddir, dtype, device,
            desc=name, quiet=quiet)
        (ddir / "config.json").write_text(json.dumps(
            drafter_config(cfg, shape, placement, dtype_name, has_head, tiny_t["hidden_size"],
                           max_position_embeddings),
            indent=2) + "\n")
        res.drafters[name] = ddir

    res.wall_s = time.perf_counter() - t0
    record = {"source": str(src.resolve()), "preset": shape.name, "shape": asdict(shape),
              "dtype": dtype_name, "device": device,
              "tiny": {"hidden_size": tiny_t["hidden_size"],
                       "num_layers": tiny_t["num_hidden_layers"],
                       "vocab_size": tiny_t["vocab_size"], "target_layer_ids": tiny_ids},
              "layer_map": placement.layer_map,
              "drafter_target_layer_ids": placement.target_layer_ids,
              "fc_blocks": placement.fc_blocks, "spare_dim": shape.target.hidden_size - 1,
              "pad_constants": asdict(pad), "bytes": res.bytes_written,
              "outputs": {"target": str(tdir), **{k: str(v) for k, v in res.drafters.items()}},
              "wall_s": round(res.wall_s, 2), "torch": torch.__version__}
    (out / "inflate.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("inflated %s -> %s (%s, %.1f s)", src, out, shape.name, res.wall_s)
    return res


# ---- CLI ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    presets = "\n".join(f"  {k}: target {v.target}\n      drafter {v.drafter}"
                        for k, v in PRESETS.items())
    p = argparse.ArgumentParser(prog="python -m domino_sglang.bench.inflate",
                                description=__doc__ + "\nPresets:\n" + presets,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=DEFAULT_SRC,
                   help="tiny pair dir with target/ and drafter-*/ (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output dir (created)")
    p.add_argument("--shape", default="qwen3-8b", help=f"preset: {', '.join(PRESETS)} "
                   "(default: %(default)s)")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES),
                   help="weight dtype written (default: %(default)s)")
    p.add_argument("--device", default="cpu",
                   help="where tensors are built: cpu or cuda[:N] (default: %(default)s)")
    p.add_argument("--drafters", default="domino,dflash",
                   help="comma list of domino, dflash, domino-nocurriculum, or 'all' "
                        "(default: %(default)s)")
    p.add_argument("--max-position-embeddings", type=int, default=None,
                   help="context length written to both configs (default: the tiny's, 2048; "
                        "SGLang takes it as the default --context-length)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("shape overrides (optional; on top of --shape)")
    for flag in ("hidden-size", "num-layers", "num-heads", "num-kv-heads", "head-dim",
                 "intermediate-size", "vocab-size"):
        g.add_argument(f"--{flag}", type=int, default=None, help=f"target {flag}")
    for flag in ("num-layers", "num-target-layers", "gru-hidden-dim", "rank",
                 "intermediate-size"):
        g.add_argument(f"--draft-{flag}", type=int, default=None, help=f"drafter {flag}")
    g.add_argument("--draft-target-layer-ids", default=None,
                   help="comma list of big target layers fed into the drafter's fc "
                        "(default: DFlash's even spread)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ids = None
        if args.draft_target_layer_ids:
            try:
                ids = tuple(int(x) for x in args.draft_target_layer_ids.split(","))
            except ValueError:
                raise InflateError(f"--draft-target-layer-ids {args.draft_target_layer_ids!r}: "
                                   "expected a comma list of integers") from None
        shape = resolve_shape(
            args.shape, hidden_size=args.hidden_size, num_layers=args.num_layers,
            num_heads=args.num_heads, num_kv_heads=args.num_kv_heads, head_dim=args.head_dim,
            intermediate_size=args.intermediate_size, vocab_size=args.vocab_size,
            draft_num_layers=args.draft_num_layers,
            draft_num_target_layers=args.draft_num_target_layers or (len(ids) if ids else None),
            draft_gru_hidden_dim=args.draft_gru_hidden_dim, draft_rank=args.draft_rank,
            draft_intermediate_size=args.draft_intermediate_size, draft_target_layer_ids=ids)
        names = (DRAFTER_NAMES if args.drafters == "all" else
                 tuple("drafter-" + n.strip().removeprefix("drafter-")
                       for n in args.drafters.split(",") if n.strip()))
        for n in names:
            if n not in DRAFTER_NAMES:
                raise InflateError(f"--drafters: unknown {n.removeprefix('drafter-')!r}; "
                                   "choose from domino, dflash, domino-nocurriculum, all")
        res = inflate_pair(args.src, args.out, shape, dtype=args.dtype, device=args.device,
                           drafters=names, max_position_embeddings=args.max_position_embeddings,
                           quiet=args.quiet)
    except InflateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gb = {k: round(v / 1e9, 3) for k, v in res.bytes_written.items()}
    print(json.dumps({"out": str(res.out), "preset": shape.name, "gb": gb,
                      "layer_map": res.placement.layer_map,
                      "drafter_target_layer_ids": res.placement.target_layer_ids,
                      "wall_s": round(res.wall_s, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
