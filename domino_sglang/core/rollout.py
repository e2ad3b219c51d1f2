"""Reference Domino rollout over one draft block (greedy and sampled).

Block layout (K = block size): position 0 holds the bonus token (the last token the target
accepted), positions 1..K-1 hold mask tokens. The backbone returns post-norm hidden states
``hidden [B, K, D]``; the block yields K-1 proposals ``d_0 .. d_{K-2}`` for positions 1..K-1.

* ``shift_label=True``: proposal i is read from the hidden state at position i (it predicts the
  next token); ``False`` (plain DFlash): from position i + 1.
* base logits ``L_base_i = lm_head(z_i)``; with a head, for ``i >= pure_prefix_len``:
  ``L_i = L_base_i + W2 SiLU(W1 [z_i ; s_i])`` where ``s_i`` is the GRU state after consuming
  the target input embeddings of ``[bonus, d_0, ..., d_{i-1}]`` (initial state 0).
* greedy: ``d_i = argmax L_i`` over the full vocabulary; sampled: ``d_i ~ q_i`` with
  ``q_i = logits_to_probs(L_i)`` (temperature, top-k, top-p per request), drawn with
  ``uniforms[:, i]``; the GRU consumes the sampled tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .drafter import HeadWeights
from .head import correction, gru_cell
from .sampling import SamplingParams, logits_to_probs, sample_from_probs


@dataclass
class RolloutResult:
    tokens: torch.Tensor  # [B, K-1] int64 proposals
    logits: torch.Tensor  # [B, K-1, V] fp32 final logits (base + correction)
    draft_probs: torch.Tensor | None  # [B, K-1, V] fp32 q_i (sampled mode only)


def proposal_hidden(hidden: torch.Tensor, shift_label: bool) -> torch.Tensor:
    """hidden [B, K, D] -> the K-1 hidden states that produce proposals [B, K-1, D]."""
    k = hidden.shape[1]
    return hidden[:, : k - 1] if shift_label else hidden[:, 1:]


def domino_rollout_ref(hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                       embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                       pure_prefix_len: int, sampling: SamplingParams | None = None,
                       uniforms: torch.Tensor | None = None) -> RolloutResult:
    """hidden [B, K, D], bonus [B], lm_head [V, D], embed [V, D] (target weights).

    ``head=None`` is a plain DFlash drafter (base logits only). ``sampling=None`` is greedy;
    otherwise ``uniforms [B, K-1]`` must be given.
    """
    z = proposal_hidden(hidden, shift_label).float()
    b, n, _ = z.shape
    base = z @ lm_head.float().t()
    if sampling is not None and uniforms is None:
        raise ValueError("uniforms [B, K-1] are required in sampled mode")
    tokens = torch.empty(b, n, dtype=torch.long, device=z.device)
    logits = torch.empty_like(base)
    probs = torch.empty_like(base) if sampling is not None else None
    s = None
    if head is not None:
        s = gru_cell(embed[bonus], torch.zeros(b, head.gru_dim, device=z.device),
                     head.w_ih, head.w_hh)
    for i in range(n):
        li = base[:, i]
        if head is not None and i >= pure_prefix_len:
            li = li + correction(z[:, i], s, head)
        logits[:, i] = li
        if sampling is None:
            tok = li.argmax(-1)
        else:
            qi = logits_to_probs(li, sampling)
            probs[:, i] = qi
            tok = sample_from_probs(qi, uniforms[:, i])
        tokens[:, i] = tok
        if head is not None and i + 1 < n:
            s = gru_cell(embed[tok], s, head.w_ih, head.w_hh)
    return RolloutResult(tokens, logits, probs)
