"""The Domino head rollout over one draft block (greedy and sampled).

``domino_head_ref`` is ``core.rollout.domino_rollout_ref``; ``domino_head`` runs the same contract
through the fused Triton kernels (``domino_sglang.kernels.domino_head``). The serving path calls
``domino_head_triton`` directly with a prepared ``HeadKernelWeights`` and a preallocated
``DominoHeadWorkspace`` (CUDA-graph capturable); this wrapper allocates per call.
"""

from __future__ import annotations

import torch

from ..core.drafter import HeadWeights
from ..core.rollout import RolloutResult, domino_rollout_ref, proposal_hidden
from ..core.sampling import SamplingParams
from . import resolve_impl


def domino_head_ref(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                    pure_prefix_len: int, sampling: SamplingParams | None = None,
                    uniforms=None) -> RolloutResult:
    """hidden [B, K, D], bonus [B], lm_head/embed [V, D] -> tokens [B, K-1], logits and (sampled)
    draft probs [B, K-1, V]. See ``core.rollout.domino_rollout_ref``."""
    return domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                              pure_prefix_len=pure_prefix_len, sampling=sampling,
                              uniforms=uniforms)


def domino_head(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                pure_prefix_len: int, sampling: SamplingParams | None = None, uniforms=None,
                impl: str = "auto", gi_table_dtype=torch.float32,
                variant: str = "default") -> RolloutResult:
    """Same contract as :func:`domino_head_ref`; impl "auto" | "triton" | "ref".

    variant (Triton only): "default" | "wide" | "fused" | "wide_pdl" | "fused_pdl" (see
    ``kernels.domino_head_fast``). The non-default variants return tokens only
    (``logits`` is None) for greedy rollouts with a head and a table; otherwise they are the
    default path.

    The Triton path computes base logits with one GEMM (fp32) and builds E_ih = embed @ W_ih^T
    (``gi_table_dtype``; None reads W_ih every step) on each call: prepare once when serving."""
    if resolve_impl(impl, hidden.device) == "ref":
        return domino_head_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                               pure_prefix_len=pure_prefix_len, sampling=sampling,
                               uniforms=uniforms)
    from domino_sglang.kernels.domino_head import (DominoHeadWorkspace, domino_head_triton,
                                                   prepare_head)

    z = proposal_hidden(hidden, shift_label)
    b, k1, _ = z.shape
    v = lm_head.shape[0]
    base = z.float() @ lm_head.float().t()
    weights = prepare_head(head, embed, gi_table_dtype=gi_table_dtype) if head is not None else None
    rank = head.w2.shape[1] if head is not None else 16
    gru = head.gru_dim if head is not None else 16
    ws = DominoHeadWorkspace(b, k1 + 1, v, rank, gru, hidden.device,
                             enable_sampling=sampling is not None)
    fast = (variant != "default" and sampling is None and head is not None
            and gi_table_dtype is not None)
    logits = None if fast else torch.empty(b, k1, v, dtype=torch.float32, device=hidden.device)
    probs = torch.empty_like(logits) if sampling is not None else None
    if sampling is not None:
        sampling = SamplingParams(sampling.temperature.to(hidden.device, torch.float32),
                                  sampling.top_k.to(hidden.device, torch.long),
                                  sampling.top_p.to(hidden.device, torch.float32))
        uniforms = uniforms.to(hidden.device, torch.float32)
    tokens = domino_head_triton(z, base, bonus, weights, ws, pure_prefix_len=pure_prefix_len,
                                sampling=sampling, uniforms=uniforms, logits_out=logits,
                                probs_out=probs, variant=variant)
    return RolloutResult(tokens.clone(), logits, probs)
