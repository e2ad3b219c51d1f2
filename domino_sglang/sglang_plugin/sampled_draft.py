"""Sampled drafting for sampled requests in chain mode (``DOMINO_SAMPLED_DRAFTS=1``).

By default a Domino server drafts the head's argmax for every request and verifies a sampled
request's drafts as point masses (accepted with probability p(x), residual p without x): lossless,
but at T = 1 it accepts far less than drafts sampled from the head's own distribution q and
verified with min(1, p/q) and the residual max(p - q, 0) (measured on the tiny pair through
the Transformers backend: T=1 tau 1.339 with point masses, 1.681 sampled;
``benchmarks/results/session12_20261207/point_mass_T1/``).

:class:`SampledDrafter` draws the block's drafts from q_i = the request's sampling distribution
(temperature, top-k, top-p; no min-p) of the Domino logits L_i, feeding each drawn token to the
GRU for the next position, exactly as the Transformers backend does
(``core.rollout.domino_rollout_ref`` on a CPU, the fused Triton head
``ops.domino_head.PreparedDominoHead`` on CUDA), and returns q with the tokens. The worker runs
it eagerly on the draft model's hidden states of the round (the draft CUDA graph's greedy head
is skipped in effect: its tokens are replaced) and hands q to the chain verify
(``sampled_verify.domino_sampled_accept(draft_probs=q)``). Greedy requests of a mixed batch are
top-k 1 rows: their q is a point mass on the argmax, the behaviour of a greedy server.

Any q gives exact sampling from the target when the verify uses that same q, so the draft
filter (the request's own top-k / top-p) only changes the acceptance, never the output
distribution. Memory: q is [bs, B-1, V] fp32 per round (at Qwen3-8B's vocabulary and batch 64,
584 MB), allocated only while sampled requests run.
"""

from __future__ import annotations

import torch

from ..core.drafter import HeadWeights
from ..core.sampling import SamplingParams
from .sampled_verify import sampling_params_of as draft_sampling_params  # the same filter


def wants_sampled_drafts(sampling_info) -> bool:
    """A batch with at least one sampled request (the rest are top-k 1 rows)."""
    return sampling_info is not None and not bool(sampling_info.is_all_greedy)


class SampledDrafter:
    """Sampled Domino drafts for one block per request: ``(tokens [bs, B-1], q [bs, B-1, V])``.

    ``impl`` "ref" runs ``core.rollout.domino_rollout_ref`` (any device), "triton" the fused head
    (``PreparedDominoHead`` with sampling; its workspace grows to the next power of two of the
    largest batch seen; the GRU input table is the one the greedy head prepared when
    ``gi_table`` matches its setting), "auto" Triton on CUDA."""

    def __init__(self, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None, *,
                 block_size: int, shift_label: bool, pure_prefix_len: int, max_bs: int = 1,
                 impl: str = "auto", gi_table: str = "fp32"):
        if impl not in ("auto", "ref", "triton"):
            raise ValueError(f"impl={impl!r}: expected auto, ref or triton")
        self.lm_head, self.embed, self.head = lm_head, embed, head
        self.block_size, self.max_bs = int(block_size), int(max_bs)
        self.shift_label, self.pure_prefix_len = bool(shift_label), int(pure_prefix_len)
        self.impl = ("triton" if lm_head.is_cuda else "ref") if impl == "auto" else impl
        self.gi_table = gi_table
        self._op = None

    def _prepared(self, bs: int):
        if self._op is None or self._op.max_batch < bs:
            from ..ops.domino_head import PreparedDominoHead

            self._op = None  # free the smaller workspace first
            self._op = PreparedDominoHead(self.lm_head, self.embed, self.head,
                                          block_size=self.block_size,
                                          max_batch=max(self.max_bs, 1 << (bs - 1).bit_length()),
                                          gi_table_dtype=self.gi_table, enable_sampling=True)
        return self._op

    def __call__(self, hidden: torch.Tensor, bonus: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        bs, block = int(hidden.shape[0]), int(hidden.shape[1])
        if block != self.block_size:
            raise ValueError(f"hidden block {block} != block_size {self.block_size}")
        uniforms = torch.rand((bs, block - 1), dtype=torch.float32, device=hidden.device,
                              generator=generator)
        if self.impl == "ref":
            from ..core.rollout import domino_rollout_ref

            res = domino_rollout_ref(hidden, bonus, self.lm_head, self.embed, self.head,
                                     shift_label=self.shift_label,
                                     pure_prefix_len=self.pure_prefix_len, sampling=params,
                                     uniforms=uniforms)
        else:
            res = self._prepared(bs)(hidden, bonus, shift_label=self.shift_label,
                                     pure_prefix_len=self.pure_prefix_len, sampling=params,
                                     uniforms=uniforms)
        return res.tokens.to(torch.int64), res.draft_probs


__all__ = ["SampledDrafter", "draft_sampling_params", "wants_sampled_drafts"]
