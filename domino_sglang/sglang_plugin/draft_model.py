"""``DominoDraftModel``: SGLang's ``DFlashDraftModel`` plus the Domino head weights.

Checked against SGLang 0.5.17 (``sglang/srt/models/dflash.py``). The stock model silently drops
checkpoint weights it has no parameter for, so the Domino head (``prefix_gru.weight_ih_l0``,
``prefix_gru.weight_hh_l0``, ``embed_proj.0.weight``, ``embed_proj.2.weight``) would vanish.
This subclass declares those parameters when ``dflash_config.projector_type == "domino"``,
records which checkpoint names reached them, and raises if any is missing or mis-shaped. A plain
DFlash checkpoint (no ``projector_type``) loads with the head off.

At ``--tp-size`` >= 2 the GRU and W1 stay replicated and W2 (``embed_proj.2``, [V, R]) becomes
this rank's vocabulary shard, laid out like the target's ``ParallelLMHead``: the full matrix
loads (and is checked) as usual, then the worker's sampler build calls
``domino_head_weights(vocab_shard=(start, Vp))``, which keeps only rows ``[start, start+Vp)``
(zero-padded past V) and frees the rest (docs/tp.md). It is not registered under
its own architecture name: the worker swaps it in for ``DFlashDraftModel`` only while the draft
model loads (``worker._draft_model_class_swapped``), so the checkpoint keeps the public
``architectures: ["DFlashDraftModel"]`` and a DFLASH server in another process is untouched.
"""

from __future__ import annotations

from typing import Iterable, Tuple

import torch
from torch import nn

from sglang.srt.models.dflash import DFlashDraftModel

from ..core.drafter import HeadWeights
from ..core.sharded import shard_vocab_rows

HEAD_WEIGHT_NAMES = ("prefix_gru.weight_ih_l0", "prefix_gru.weight_hh_l0",
                     "embed_proj.0.weight", "embed_proj.2.weight")


def _dflash_section(config) -> dict:
    section = getattr(config, "dflash_config", None)
    if section is None:
        return {}
    return dict(section) if isinstance(section, dict) else dict(vars(section))


class _GRUWeights(nn.Module):
    """Parameter holder under PyTorch ``nn.GRU`` names (bias-free, one layer)."""

    def __init__(self, input_dim: int, gru_dim: int):
        super().__init__()
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * gru_dim, input_dim), requires_grad=False)
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * gru_dim, gru_dim), requires_grad=False)


class _Linear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim), requires_grad=False)


class DominoDraftModel(DFlashDraftModel):
    """DFlash backbone + optional Domino head parameters (loaded, checked, never run here:
    the worker's draft sampler runs the head inside the draft CUDA graph)."""

    def __init__(self, config, quant_config=None, prefix: str = "") -> None:
        super().__init__(config, quant_config=quant_config, prefix=prefix)
        section = _dflash_section(config)
        self.domino_shift_label = bool(section.get("shift_label", False))
        self.domino_pure_prefix_len = int(section.get("pure_draft_prefix_len", 0) or 0)
        self.domino_head_enabled = section.get("projector_type") == "domino"
        self.domino_loaded_head: set[str] = set()
        if self.domino_head_enabled:
            d = int(config.hidden_size)
            g = int(section["gru_hidden_dim"])
            r = int(section.get("emb_dim") or getattr(config, "emb_dim"))
            v = int(config.vocab_size)
            self.prefix_gru = _GRUWeights(d, g)
            self.embed_proj = nn.ModuleDict({"0": _Linear(d + g, r), "2": _Linear(r, v)})
        else:
            self.domino_pure_prefix_len = 0

    def forward(self, input_ids, positions, forward_batch, input_embeds=None, *args, **kwargs):
        """DFlash's forward with the block embeddings in the draft's dtype.

        SGLang 0.5.17's eager extend path (``ModelRunner._extend_forward_kwargs``) hands the
        model ``forward_batch.input_embeds.bfloat16()`` whatever the serving dtype, so with
        ``--dtype float16`` every draft forward outside the captured batch sizes fed bf16 into
        fp16 layers and killed the scheduler (H200, 2026-11-29). The graph path's buffer already
        has the right dtype (no-op there)."""
        if input_embeds is not None and input_embeds.dtype != self.fc.weight.dtype:
            input_embeds = input_embeds.to(self.fc.weight.dtype)
        return super().forward(input_ids, positions, forward_batch, input_embeds, *args, **kwargs)

    @property
    def has_domino_head(self) -> bool:
        return self.domino_head_enabled

    def domino_head_weights(self, vocab_shard: tuple[int, int] | None = None
                            ) -> HeadWeights | None:
        """The head weights; ``vocab_shard=(start, Vp)`` (TP >= 2) first replaces W2 by its rows
        ``[start, start+Vp)``, zero-padded past V (once: the full W2 is freed, and a later call
        must ask for the same shard)."""
        if not self.domino_head_enabled:
            return None
        if vocab_shard is not None:
            self._domino_shard_w2(int(vocab_shard[0]), int(vocab_shard[1]))
        return HeadWeights(w_ih=self.prefix_gru.weight_ih_l0, w_hh=self.prefix_gru.weight_hh_l0,
                           w1=self.embed_proj["0"].weight, w2=self.embed_proj["2"].weight)

    def _domino_shard_w2(self, start: int, size: int) -> None:
        done = getattr(self, "domino_w2_vocab_shard", None)
        if done == (start, size):
            return
        if done is not None:
            raise RuntimeError(f"domino: W2 is already the vocabulary shard {done}, not "
                               f"{(start, size)}")
        w2 = self.embed_proj["2"].weight
        self.embed_proj["2"].weight = nn.Parameter(shard_vocab_rows(w2.data, start, size),
                                                   requires_grad=False)
        self.domino_w2_vocab_shard = (start, size)

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]):
        params = dict(self.named_parameters()) if self.domino_head_enabled else {}
        seen: set[str] = set()

        def tracked():
            for name, tensor in weights:
                short = name.removeprefix("model.")
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ValueError(f"draft weight {name!r} contains NaN or Inf values")
                if short in HEAD_WEIGHT_NAMES:
                    if not self.domino_head_enabled:
                        raise ValueError(
                            f"draft weight {name!r} is a Domino head weight but the draft config "
                            "has no dflash_config.projector_type='domino'")
                    param = params[short]
                    if tuple(tensor.shape) != tuple(param.shape):
                        raise ValueError(
                            f"draft weight {name!r}: shape {tuple(tensor.shape)} in the "
                            f"checkpoint, the config implies {tuple(param.shape)}")
                    seen.add(short)
                yield name, tensor

        super().load_weights(tracked())
        self.domino_loaded_head |= seen
        if self.domino_head_enabled:
            missing = [n for n in HEAD_WEIGHT_NAMES if n not in self.domino_loaded_head]
            if missing:
                raise ValueError(
                    f"Domino draft checkpoint: head weights {missing} are missing although "
                    "dflash_config.projector_type='domino' (the head would stay random). Fix the "
                    "checkpoint, or remove projector_type to serve it as a plain DFlash drafter.")


EntryClass = []  # never picked up by ModelRegistry.register: swapped in by the worker only
