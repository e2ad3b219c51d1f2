"""The Domino head rollout over one draft block (greedy and sampled).

``domino_head_ref`` is ``core.rollout.domino_rollout_ref``; ``domino_head`` runs the same contract
through the fused Triton kernels (``domino_sglang.kernels.domino_head``); both it and the
serving head run ``kernels.domino_head_fast.domino_head_launch`` on prepared weights and a
preallocated workspace (:class:`PreparedDominoHead`: CUDA-graph capturable); ``domino_head``
prepares per call.
"""

from __future__ import annotations

import logging

import torch

from ..core.drafter import HeadWeights
from ..core.rollout import RolloutResult, domino_rollout_ref, proposal_hidden
from ..core.sampling import SamplingParams
from . import resolve_impl

logger = logging.getLogger(__name__)


def domino_head_ref(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                    pure_prefix_len: int, sampling: SamplingParams | None = None,
                    uniforms=None) -> RolloutResult:
    """hidden [B, K, D], bonus [B], lm_head/embed [V, D] -> tokens [B, K-1], logits and (sampled)
    draft probs [B, K-1, V]. See ``core.rollout.domino_rollout_ref``."""
    return domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                              pure_prefix_len=pure_prefix_len, sampling=sampling,
                              uniforms=uniforms)


def base_logits_fp32(z: torch.Tensor, lm_head: torch.Tensor) -> torch.Tensor:
    """z [..., D] @ lm_head [V, D]^T as fp32 [..., V] with the spec's numerics (fp32 products
    and accumulation). When z and lm_head share a bf16/fp16 dtype on CUDA: one GEMM with fp32
    accumulation and output (the products of two bf16 values are exact in fp32), without the
    fp32 copy of the LM head (2.5 GB at Qwen3-8B) that the fp32 fallback makes."""
    if z.dtype == lm_head.dtype != torch.float32 and lm_head.device.type == "cuda":
        z2 = z.reshape(-1, z.shape[-1])
        try:
            return torch.mm(z2, lm_head.t(), out_dtype=torch.float32).view(*z.shape[:-1], -1)
        except (TypeError, RuntimeError) as exc:  # a torch without mm(out_dtype=...)
            logger.debug("fp32-output GEMM unavailable (%s): fp32 operands", exc)
    return z.float() @ lm_head.float().t()


class PreparedDominoHead:
    """The Triton rollout of :func:`domino_head_ref` with the head's weights prepared once
    (``prepare_head``: W1 split, the GRU input table E_ih) and one static workspace for up to
    ``max_batch`` requests, so that repeated rollouts (the Transformers backend's rounds) pay
    no preparation. ``head=None`` is a plain DFlash drafter (one argmax per block, greedy).

    variant: a ``kernels.domino_head`` launch variant for greedy rollouts with a head, or
    ``"auto"`` (:func:`pick_variant`). Greedy calls return tokens only (``logits`` None);
    sampled calls (``sampling`` + ``uniforms``) also return the draft probabilities q_i."""

    def __init__(self, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None, *,
                 block_size: int, max_batch: int = 1, gi_table_dtype=torch.float32,
                 variant: str = "auto", enable_sampling: bool = True):
        from domino_sglang.kernels.domino_head import DominoHeadWorkspace, prepare_head

        self.lm_head, self.embed, self.head = lm_head, embed, head
        self.block_size, self.max_batch = int(block_size), int(max_batch)
        self.variant = variant
        self.weights = (prepare_head(head, embed, gi_table_dtype=gi_table_dtype)
                        if head is not None else None)
        rank = head.w2.shape[1] if head is not None else 16
        gru = head.gru_dim if head is not None else 16
        self.ws = DominoHeadWorkspace(self.max_batch, self.block_size, lm_head.shape[0], rank, gru,
                                      lm_head.device, enable_sampling=enable_sampling)

    def __call__(self, hidden, bonus, *, shift_label: bool, pure_prefix_len: int,
                 sampling: SamplingParams | None = None, uniforms=None,
                 want_logits: bool = False) -> RolloutResult:
        from domino_sglang.kernels.domino_head_fast import domino_head_launch

        z = proposal_hidden(hidden, shift_label)
        b, k1, _ = z.shape
        if b > self.max_batch or k1 + 1 != self.block_size:
            raise ValueError(f"hidden {tuple(hidden.shape)}: this head was prepared for batch <= "
                             f"{self.max_batch} and block {self.block_size}")
        base = base_logits_fp32(z, self.lm_head)
        if self.weights is None and sampling is None and not want_logits:
            return RolloutResult(base.argmax(-1), None, None)
        logits = probs = None
        if want_logits:
            logits = torch.empty(b, k1, base.shape[-1], dtype=torch.float32, device=z.device)
        if sampling is not None:
            probs = torch.empty(b, k1, base.shape[-1], dtype=torch.float32, device=z.device)
            sampling = SamplingParams(sampling.temperature.to(z.device, torch.float32),
                                      sampling.top_k.to(z.device, torch.long),
                                      sampling.top_p.to(z.device, torch.float32))
            uniforms = uniforms.to(z.device, torch.float32)
        variant = "default" if sampling is not None or want_logits else pick_variant(
            self.variant, b, z.device)
        tokens = domino_head_launch(z, base, bonus, self.weights, self.ws,
                                    pure_prefix_len=pure_prefix_len, sampling=sampling,
                                    uniforms=uniforms, logits_out=logits, probs_out=probs,
                                    variant=variant)
        return RolloutResult(tokens.clone(), logits, probs)


def pick_variant(variant: str, batch: int, device=None) -> str:
    """The head's launch variant: ``auto`` = the fastest measured on the H200
    (``benchmarks/results/kernels_notes.md``): ``fused_pdl`` at batch 1 on sm_90+ (``fused``
    elsewhere), ``wide`` above (its ``_pdl`` form measured slower at batch 16 and 64)."""
    if variant != "auto":
        return variant
    if batch > 1:
        return "wide"
    from domino_sglang.kernels.domino_head_fast import pdl_supported

    return "fused_pdl" if device is not None and pdl_supported(torch.device(device)) else "fused"


def domino_head(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                pure_prefix_len: int, sampling: SamplingParams | None = None, uniforms=None,
                impl: str = "auto", gi_table_dtype=torch.float32,
                variant: str = "default") -> RolloutResult:
    """Same contract as :func:`domino_head_ref`; impl "auto" | "triton" | "ref".

    variant (Triton only): "default" | "wide" | "fused" | "wide_pdl" | "fused_pdl" (see
    ``kernels.domino_head_fast``). The non-default variants return tokens only
    (``logits`` is None) for greedy rollouts with a head and a table; otherwise they are the
    default path.

    The Triton path prepares the head (E_ih = embed @ W_ih^T in ``gi_table_dtype``; None reads
    W_ih every step) and a workspace on each call: use :class:`PreparedDominoHead` to repeat."""
    if resolve_impl(impl, hidden.device) == "ref":
        return domino_head_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                               pure_prefix_len=pure_prefix_len, sampling=sampling,
                               uniforms=uniforms)
    fast = (variant != "default" and sampling is None and head is not None
            and gi_table_dtype is not None)
    prepared = PreparedDominoHead(lm_head, embed, head, block_size=hidden.shape[1],
                                  max_batch=hidden.shape[0], gi_table_dtype=gi_table_dtype,
                                  variant=variant, enable_sampling=sampling is not None)
    return prepared(hidden, bonus, shift_label=shift_label, pure_prefix_len=pure_prefix_len,
                    sampling=sampling, uniforms=uniforms, want_logits=not fast)
