"""Chain verification (greedy and lossless sampling): the chain is the path-shaped tree, so the
Triton path is the tree walk kernel with implicit parents (``kernels.tree_verify``, IS_CHAIN).

``chain_verify_greedy_ref`` is ``core.verify.chain_verify_greedy_ref`` and
``chain_verify_sample_ref`` is ``core.chain_verify_sample_ref`` (the tree reference on a path).
"""

from __future__ import annotations

from ..core.verify import VerifyResult
from ..core.verify import chain_verify_greedy_ref as _greedy_ref
from . import resolve_impl
from .tree_verify import tree_verify_greedy, tree_verify_sample


def chain_verify_greedy_ref(draft_tokens, target_logits):
    """draft_tokens [B, K-1], target_logits [B, K, V] -> (accept_len [B], bonus [B])."""
    return _greedy_ref(draft_tokens, target_logits)


def chain_verify_sample_ref(draft_tokens, bonus, target_probs, draft_probs, uniforms,
                            uniform_final) -> VerifyResult:
    """draft_tokens [B, K-1], bonus [B], target_probs [B, K, V], draft_probs [B, K-1, V] (the
    rollout's q_i) or None, uniforms [B, K-1], uniform_final [B]."""
    from ..core import chain_verify_sample_ref as _sample_ref

    return _sample_ref(draft_tokens, bonus, target_probs, draft_probs, uniforms, uniform_final)


def chain_verify_greedy(draft_tokens, target_logits, impl: str = "auto"):
    if resolve_impl(impl, target_logits.device) == "ref":
        return chain_verify_greedy_ref(draft_tokens, target_logits)
    res = tree_verify_greedy(draft_tokens, None, target_logits, impl="triton")  # parents: chain
    return res.accept_len, res.bonus


def chain_verify_sample(draft_tokens, bonus, target_probs, draft_probs, uniforms, uniform_final,
                        impl: str = "auto") -> VerifyResult:
    if resolve_impl(impl, target_probs.device) == "ref":
        return chain_verify_sample_ref(draft_tokens, bonus, target_probs, draft_probs, uniforms,
                                       uniform_final)
    return tree_verify_sample(draft_tokens, None, target_probs, draft_probs, uniforms,
                              uniform_final, impl="triton")
