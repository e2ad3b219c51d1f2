"""The executable specification: reference implementations every kernel and backend is tested
against. Plain PyTorch; imports no SGLang, Transformers or Triton.

* rollout: :func:`domino_rollout_ref` (greedy and sampled) over one draft block;
* chain verification: :func:`chain_verify_greedy_ref`, and sampled chains as path-shaped trees
  through :func:`tree_verify_sample_ref` (:func:`chain_verify_sample_ref`);
* trees: :func:`build_tree_ref`, :func:`tree_attention_mask`, :func:`tree_positions`,
  :func:`tree_verify_greedy_ref`, :func:`tree_verify_sample_ref`;
* sampling conventions: :func:`logits_to_probs`, :func:`sample_from_probs`.
"""

import torch

from .core.head import correction, gru_cell
from .core.rollout import RolloutResult, domino_rollout_ref, proposal_hidden
from .core.sampling import SamplingParams, logits_to_probs, sample_from_probs
from .core.tree import (DraftTree, build_tree_ref, chain_parents, tree_attention_mask,
                        tree_num_nodes, tree_positions)
from .core.verify import (VerifyResult, chain_verify_greedy_ref, tree_verify_greedy_ref,
                          tree_verify_sample_ref)


def chain_verify_sample_ref(draft_tokens, bonus, target_probs, draft_probs, uniforms,
                            uniform_final) -> VerifyResult:
    """Sampled chain verification: draft_tokens [B, K-1], bonus [B], target_probs [B, K, V],
    draft_probs [B, K-1, V] (q of each proposal) or None; uniforms [B, K-1]; uniform_final [B].
    Runs the tree reference on the path-shaped tree."""
    b, k1 = draft_tokens.shape
    tokens = torch.cat([bonus[:, None], draft_tokens], dim=1)
    parents = chain_parents(k1 + 1).expand(b, -1)
    dq = None
    if draft_probs is not None:
        dq = torch.cat([torch.zeros_like(draft_probs[:, :1]), draft_probs], dim=1)
    u = torch.cat([torch.zeros_like(uniforms[:, :1]), uniforms], dim=1)
    return tree_verify_sample_ref(tokens, parents, target_probs, dq, u, uniform_final)


__all__ = [
    "DraftTree", "RolloutResult", "SamplingParams", "VerifyResult", "build_tree_ref",
    "chain_parents", "chain_verify_greedy_ref", "chain_verify_sample_ref", "correction",
    "domino_rollout_ref", "gru_cell", "logits_to_probs", "proposal_hidden", "sample_from_probs",
    "tree_attention_mask", "tree_num_nodes", "tree_positions", "tree_verify_greedy_ref",
    "tree_verify_sample_ref",
]
