"""``domino_sglang.core``, the executable specification: reference implementations every kernel and backend is tested
against. Plain PyTorch; imports no SGLang, Transformers or Triton.

* rollout: :func:`domino_rollout_ref` (greedy and sampled) over one draft block;
* chain verification: :func:`chain_verify_greedy_ref`, and sampled chains as path-shaped trees
  through :func:`tree_verify_sample_ref` (:func:`chain_verify_sample_ref`);
* trees: :func:`build_tree_ref` (:func:`build_tree_best_first_ref`: reference only, no kernel
  yet), :func:`tree_attention_mask`, :func:`tree_positions`, :func:`tree_verify_greedy_ref`,
  :func:`tree_verify_sample_ref`;
* sampling conventions: :func:`logits_to_probs`, :func:`sample_from_probs`.
"""

from .head import correction, gru_cell
from .rollout import RolloutResult, domino_rollout_ref, proposal_hidden
from .sampling import SamplingParams, logits_to_probs, sample_from_probs
from .tree import (DraftTree, best_first_num_nodes, build_tree_best_first_ref, build_tree_ref,
                   chain_parents, tree_attention_mask, tree_num_nodes, tree_positions)
from .verify import (VerifyResult, chain_verify_greedy_ref, chain_verify_sample_ref,
                     tree_verify_greedy_ref, tree_verify_sample_ref)

__all__ = [
    "DraftTree", "RolloutResult", "SamplingParams", "VerifyResult", "build_tree_ref",
    "best_first_num_nodes", "build_tree_best_first_ref",
    "chain_parents", "chain_verify_greedy_ref", "chain_verify_sample_ref", "correction",
    "domino_rollout_ref", "gru_cell", "logits_to_probs", "proposal_hidden", "sample_from_probs",
    "tree_attention_mask", "tree_num_nodes", "tree_positions", "tree_verify_greedy_ref",
    "tree_verify_sample_ref",
]
