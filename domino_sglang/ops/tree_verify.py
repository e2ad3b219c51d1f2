"""Tree verification, greedy and lossless rejection sampling.

``tree_verify_greedy_ref`` / ``tree_verify_sample_ref`` are ``core.verify``'s; the dispatchers run
``domino_sglang.kernels.tree_verify`` (one walk kernel for trees and chains) on CUDA.
"""

from __future__ import annotations

from ..core.verify import VerifyResult
from ..core.verify import tree_verify_greedy_ref as _greedy_ref
from ..core.verify import tree_verify_sample_ref as _sample_ref
from . import resolve_impl


def tree_verify_greedy_ref(tokens, parents, target_logits) -> VerifyResult:
    """tokens/parents [B, N], target_logits [B, N, V]: the longest path matching the argmax."""
    return _greedy_ref(tokens, parents, target_logits)


def tree_verify_sample_ref(tokens, parents, target_probs, draft_probs, uniforms,
                           uniform_final) -> VerifyResult:
    """tokens/parents [B, N], target_probs [B, N, V], draft_probs [B, N, V] or None (point
    masses), uniforms [B, N] (coin of node j), uniform_final [B]."""
    return _sample_ref(tokens, parents, target_probs, draft_probs, uniforms, uniform_final)


def tree_verify_greedy(tokens, parents, target_logits, impl: str = "auto") -> VerifyResult:
    if resolve_impl(impl, target_logits.device) == "ref":
        return tree_verify_greedy_ref(tokens, parents, target_logits)
    from domino_sglang.kernels.tree_verify import tree_verify_triton

    return VerifyResult(*tree_verify_triton(tokens, parents, target_logits=target_logits))


def tree_verify_sample(tokens, parents, target_probs, draft_probs, uniforms, uniform_final,
                       impl: str = "auto") -> VerifyResult:
    if resolve_impl(impl, target_probs.device) == "ref":
        return tree_verify_sample_ref(tokens, parents, target_probs, draft_probs, uniforms,
                                      uniform_final)
    from domino_sglang.kernels.tree_verify import tree_verify_triton

    return VerifyResult(*tree_verify_triton(
        tokens, parents, target_probs=target_probs.float(),
        draft_probs=draft_probs.float() if draft_probs is not None else None,
        uniforms=uniforms.float(), uniform_final=uniform_final.float()))
