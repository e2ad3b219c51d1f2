"""Tensor-parallel Domino rollout: the vocabulary-sharded twin of ``domino_rollout_ref``.

Layout (SGLang ``VocabParallelEmbedding`` / ``ParallelLMHead``): the vocabulary is padded to
``world * Vp`` rows and rank r holds rows ``[r*Vp, (r+1)*Vp)`` of the LM head, of the input
embedding and of the head's W2 (``embed_proj.2``, [V, R]); rows ``>= vocab_size`` are padding and
never win. The GRU (w_ih, w_hh) and W1 are replicated, so every rank carries the same GRU state.
Each rank computes base + correction logits for its own slice only.

Collectives per step (one all-gather each; ``P`` is the packed width in fp32):

* greedy: **1** (and 1 per *block* without a head, or when the pure prefix covers the block:
  no recurrence, so all K-1 argmax packs travel together). Each rank packs ``[max value, global
  index of its lowest-index max, embedding row of that token]`` into one fp32 ``[B, 2 + D]``
  tensor (the row only when the GRU consumes the token, i.e. with a head and ``i + 1 < K-1``).
  After the all-gather every rank takes, per request, the rank with the largest value
  (``torch.argmax`` over ranks: the lowest rank on ties, NaN counts as the largest, exactly like
  ``torch.argmax`` over the full vocabulary, because shards are contiguous and ascending) and
  copies its index and embedding row. fp32 holds the value and every embedding dtype used
  (fp32/bf16/fp16) exactly, and the index exactly because the padded vocabulary is below 2**24
  (checked).
* sampled: **2** (1 at the last position or without a head). (a) all-gather of the shard
  logits ``[B, Vp]``: every rank rebuilds the full ``[B, V]`` logits and runs the reference
  ``logits_to_probs`` + ``sample_from_probs`` (temperature, top-k, top-p all supported, no
  further collective), so the token is bit-identical to the single-shard reference on the same
  uniforms; (b) all-gather of the rows ``embed_shard[tok - shard_start]`` ``[B, D]``: every rank
  copies the owner's row for the GRU.
* per block, with a head that applies (``pure_prefix_len < K-1``; otherwise the head cannot
  change a token and is skipped): the bonus token's embedding row rides in step 0's all-gather
  when step 0 is a pure-prefix step (``pure_prefix_len >= 1``: its logits do not need the GRU
  state); with ``pure_prefix_len == 0`` it costs one extra all-gather before step 0.

The SGLang plugin's PyTorch heads (``sglang_plugin.head.TorchDominoHeadTP``, and at TP=1
``torch_domino_head`` over :data:`SINGLE_RANK`) are this rollout with the serving numerics
(``math``: a :class:`RolloutMath` with matmuls in the weight dtype, logits per step) and
``keep_logits=False``; ``group`` may be SGLang's TP ``GroupCoordinator`` (its pynccl all-gather
is capturable in the draft CUDA graph). Fixed shapes, no host sync and no ``.item()``, so the
whole rollout can be recorded in a CUDA graph.

Every token is decided from gathered data with the same ops on every rank, so ranks never
disagree on a proposal (no divergent control flow), and every embedding row is *copied* from its
owner, never summed. The rollout therefore equals the single-shard reference bit for bit
whenever each shard's logits equal the matching columns of the full logits and the replicated
GRU/W1 GEMMs run the same kernels as the reference (same shapes, layouts, thread count); see
docs/tp.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from .drafter import HeadWeights
from .head import correction, gru_cell
from .rollout import RolloutResult, proposal_hidden
from .sampling import SamplingParams, logits_to_probs, sample_from_probs

_MAX_FP32_INDEX = 2 ** 24  # every integer below this is exact in fp32


def _spec_logits(z: torch.Tensor, lm_head: torch.Tensor) -> torch.Tensor:
    return z.float() @ lm_head.float().t()


@dataclass(frozen=True)
class RolloutMath:
    """The numerics of :func:`domino_rollout_sharded`: ``logits(z [.., D], lm_head [Vp, D])``
    -> fp32 [.., Vp], ``gru(x, s, w_ih, w_hh)`` -> fp32 state, ``correction(z, s, head)`` ->
    fp32 [B, Vp]; ``per_step``: base logits one step at a time ([B, Vp] live) rather than one
    GEMM for the block ([B, K-1, Vp] live). :data:`SPEC_MATH` is the specification's (fp32,
    ``core.head``)."""

    logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _spec_logits
    gru: Callable = gru_cell
    correction: Callable = correction
    per_step: bool = False


SPEC_MATH = RolloutMath()


class SingleRank:
    """A one-rank group: :func:`domino_rollout_sharded` on the whole vocabulary without
    ``torch.distributed`` (its all-gathers are no-ops)."""

    world_size = 1
    rank_in_group = 0

    @staticmethod
    def all_gather_into_tensor(out: torch.Tensor, x: torch.Tensor) -> None:
        out.copy_(x)


SINGLE_RANK = SingleRank()


def shard_vocab_rows(full: torch.Tensor, shard_start: int, shard_size: int) -> torch.Tensor:
    """Rows ``[shard_start, shard_start + shard_size)`` of ``full [V, *]``, zero-padded past V."""
    out = full.new_zeros((shard_size,) + tuple(full.shape[1:]))
    stop = min(full.shape[0], shard_start + shard_size)
    if stop > shard_start:
        out[: stop - shard_start] = full[shard_start:stop]
    return out


def _is_coordinator(group) -> bool:
    """An SGLang ``GroupCoordinator`` (``get_tp_group()``), not a torch process group."""
    return hasattr(group, "all_gather_into_tensor") and hasattr(group, "rank_in_group")


def group_world_rank(group) -> tuple[int, int]:
    """(world size, rank) of ``group``: a torch process group (``None``: the default group) or
    an SGLang ``GroupCoordinator`` (``world_size``, ``rank_in_group``)."""
    if _is_coordinator(group):
        return int(group.world_size), int(group.rank_in_group)
    return dist.get_world_size(group), dist.get_rank(group)


def _all_gather(x: torch.Tensor, group, world: int) -> torch.Tensor:
    """x [B, P] -> [world, B, P] (one collective). An SGLang coordinator gathers through its own
    ``all_gather_into_tensor`` (pynccl on CUDA, capturable in a CUDA graph). One rank: a view."""
    if world == 1:
        return x.unsqueeze(0)
    out = x.new_empty((world * x.shape[0],) + tuple(x.shape[1:]))  # concatenation form
    if _is_coordinator(group):
        group.all_gather_into_tensor(out, x.contiguous())
    else:
        # torch >= 2.13 renames all_gather_into_tensor to all_gather_single
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(out, x.contiguous(), group=group)
    return out.view((world,) + tuple(x.shape))


def _pick_rank(gathered: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """gathered [world, B, P], owner [B] rank ids -> [B, P] (row b copied from rank owner[b])."""
    return gathered[owner, torch.arange(gathered.shape[1], device=gathered.device)]


def _row(picked: torch.Tensor, lo: int, hi: int | None) -> torch.Tensor:
    """Columns [lo, hi) of a packed pick as a contiguous [B, D] block: the GRU GEMM gets the
    same layout as the reference's ``embed[tok]`` (a strided input may take another BLAS path;
    no difference was seen on CPU MKL, this is defensive)."""
    return picked[:, lo:hi].contiguous()


def greedy_step(logits: torch.Tensor, embed_shard: torch.Tensor, shard_start: int, group,
                world: int, *, with_row: bool, extra: torch.Tensor | None = None):
    """One greedy proposal over vocabulary shards, ONE all-gather (module docstring).

    logits [B, Vp]: this rank's fp32 logits, padding at -inf; ``with_row``: also return the
    winner's embedding row (fp32 [B, D]); ``extra [B, E]`` rides along in the same gather.
    Returns ``(tokens [B] global ids, row or None, gathered [world, B, P])``, identical on every
    rank; ``extra`` of rank r is ``gathered[r, :, -E:]``."""
    arg = logits.argmax(-1)  # lowest local index among ties (NaN counts as the max)
    packed = [logits.gather(-1, arg[:, None]), (arg + shard_start).float()[:, None]]
    if with_row:
        packed.append(embed_shard[arg].float())
    if extra is not None:
        packed.append(extra)
    gathered = _all_gather(torch.cat(packed, dim=-1), group, world)
    win = _pick_rank(gathered, gathered[:, :, 0].argmax(0))  # lowest rank on ties
    d = embed_shard.shape[1]
    return win[:, 1].long(), (_row(win, 2, 2 + d) if with_row else None), gathered


def owner_rows(local_rows: torch.Tensor, tokens: torch.Tensor, vp: int, group,
               world: int) -> torch.Tensor:
    """local_rows [B, D] (``embed_shard[tokens - shard_start]``, clamped: only the owner's row is
    right) -> the owners' rows [B, D], one all-gather."""
    return _pick_rank(_all_gather(local_rows, group, world), tokens // vp)


def owner_extra(gathered: torch.Tensor, tokens: torch.Tensor, vp: int,
                width: int) -> torch.Tensor:
    """The ``extra [B, width]`` columns that each token's owner (rank ``token // Vp``) sent with
    :func:`greedy_step` (the bonus row riding with step 0)."""
    return _row(_pick_rank(gathered, tokens // vp), -width, None)


def check_layout(world: int, rank: int, vp: int, shard_start: int, vocab_size: int) -> None:
    """The contiguous ascending layout the tie order relies on, and exact fp32 token ids."""
    if shard_start != rank * vp:
        raise ValueError(f"shard_start={shard_start}: rank {rank} with Vp={vp} must start at "
                         f"{rank * vp} (contiguous ascending shards give argmax tie order)")
    if not vocab_size <= world * vp < _MAX_FP32_INDEX:
        raise ValueError(f"vocab_size={vocab_size}, padded {world}*{vp}: need vocab_size <= "
                         f"world*Vp < 2**24 (token ids travel as exact fp32)")


def _local_head(head: HeadWeights | None, shard_start: int, vp: int) -> HeadWeights | None:
    if head is None:
        return None
    # Vp rows: already this rank's shard; otherwise the full [V, R], cut here. A full W2 with
    # exactly Vp rows (V == Vp) reads the same either way: ranks > 0 then hold padding only.
    w2 = head.w2 if head.w2.shape[0] == vp else shard_vocab_rows(head.w2, shard_start, vp)
    return HeadWeights(head.w_ih, head.w_hh, head.w1, w2)


def domino_rollout_sharded(hidden: torch.Tensor, bonus: torch.Tensor,
                           lm_head_shard: torch.Tensor, embed_shard: torch.Tensor,
                           head_shard_or_full: HeadWeights | None, *, shard_start: int,
                           vocab_size: int, group=None, shift_label: bool,
                           pure_prefix_len: int, sampling: SamplingParams | None = None,
                           uniforms: torch.Tensor | None = None,
                           math: RolloutMath = SPEC_MATH,
                           keep_logits: bool = True) -> RolloutResult:
    """Vocabulary-sharded Domino rollout; the same tokens as ``domino_rollout_ref``.

    hidden [B, K, D] and bonus [B] (replicated); lm_head_shard [Vp, D] and embed_shard [Vp, D]
    hold global rows ``[shard_start, shard_start + Vp)``, and ``shard_start`` must be
    ``rank * Vp`` in ``group`` (a torch process group, ``None`` for the default one, or SGLang's
    ``GroupCoordinator``, see :func:`group_world_rank`). ``head_shard_or_full``: the
    replicated GRU/W1 with W2 either this rank's shard ``[Vp, R]`` or the full ``[V, R]`` (cut
    here); ``None`` is plain DFlash. ``sampling=None`` is greedy; otherwise ``uniforms
    [B, K-1]`` (the same on every rank) must be given.

    Returns, on every rank: ``tokens [B, K-1]`` (replicated); ``logits [B, K-1, Vp]`` this
    rank's slice of the final logits, padding rows at -inf; ``draft_probs [B, K-1, V]`` the full
    q_i (sampled mode, replicated) or None. ``keep_logits=False`` returns ``logits`` None and
    keeps no [B, K-1, Vp] buffer; ``math`` swaps the numerics (:class:`RolloutMath`).
    """
    world, rank = group_world_rank(group)
    vp, d = lm_head_shard.shape
    if embed_shard.shape[0] != vp:
        raise ValueError(f"embed_shard has {embed_shard.shape[0]} rows, lm_head_shard {vp}: "
                         "both must be this rank's vocabulary shard")
    check_layout(world, rank, vp, shard_start, vocab_size)
    if sampling is not None and uniforms is None:
        raise ValueError("uniforms [B, K-1] are required in sampled mode")
    z = proposal_hidden(hidden, shift_label)
    b, n, _ = z.shape
    dev = z.device
    # a head whose correction never applies (pure prefix covers the block) only costs rows
    use_head = head_shard_or_full is not None and pure_prefix_len < n
    head = _local_head(head_shard_or_full, shard_start, vp) if use_head else None
    # padding rows (global id >= vocab_size) must never win: -inf also clears garbage/NaN rows
    pad = (shard_start + torch.arange(vp, device=dev)) >= vocab_size
    if sampling is None and head is None:  # no recurrence: every proposal in one all-gather
        logits = math.logits(z, lm_head_shard).masked_fill(pad, -float("inf"))
        tok, _, _ = greedy_step(logits.reshape(b * n, vp), embed_shard, shard_start, group,
                                world, with_row=False)
        return RolloutResult(tok.view(b, n), logits if keep_logits else None, None)
    base = None if math.per_step else math.logits(z, lm_head_shard)  # [B, K-1, Vp]
    tokens = torch.empty(b, n, dtype=torch.long, device=dev)
    logits = torch.empty(b, n, vp, device=dev) if keep_logits else None
    probs = torch.empty(b, n, vocab_size, device=dev) if sampling is not None else None
    s = None
    fused_bonus = None  # the bonus row, sent along with step 0's all-gather
    if head is not None:
        bonus_row = embed_shard[(bonus - shard_start).clamp(0, vp - 1)].float()
        if pure_prefix_len >= 1:
            fused_bonus = bonus_row
        else:
            x0 = owner_rows(bonus_row, bonus, vp, group, world)
            s = math.gru(x0, torch.zeros(b, head.gru_dim, device=dev), head.w_ih, head.w_hh)

    for i in range(n):
        li = math.logits(z[:, i], lm_head_shard) if base is None else base[:, i]
        if head is not None and i >= pure_prefix_len:
            li = li + math.correction(z[:, i], s, head)
        li = li.masked_fill(pad, -float("inf"))
        if logits is not None:
            logits[:, i] = li
        need_row = head is not None and i + 1 < n
        extra = [fused_bonus] if (i == 0 and fused_bonus is not None) else []
        if sampling is None:
            tok, row, gathered = greedy_step(li, embed_shard, shard_start, group, world,
                                             with_row=need_row,
                                             extra=extra[0] if extra else None)
        else:
            gathered = _all_gather(torch.cat([li] + extra, dim=-1), group, world)
            full = gathered[:, :, :vp].permute(1, 0, 2).reshape(b, world * vp)[:, :vocab_size]
            qi = logits_to_probs(full, sampling)
            probs[:, i] = qi
            tok = sample_from_probs(qi, uniforms[:, i])
            row = None
            if need_row:
                own = embed_shard[(tok - shard_start).clamp(0, vp - 1)].float()
                row = owner_rows(own, tok, vp, group, world)
        if extra:
            x0 = owner_extra(gathered, bonus, vp, d)
            s = math.gru(x0, torch.zeros(b, head.gru_dim, device=dev), head.w_ih, head.w_hh)
        tokens[:, i] = tok
        if row is not None:
            s = math.gru(row, s, head.w_ih, head.w_hh)
    return RolloutResult(tokens, logits, probs)


def collectives_per_block(num_proposals: int, *, has_head: bool, sampled: bool,
                          pure_prefix_len: int) -> int:
    """The number of all-gathers one ``domino_rollout_sharded`` call issues (K-1 proposals)."""
    n = num_proposals
    if not sampled and not (has_head and pure_prefix_len < n):
        return 1  # no recurrence: the whole block's argmax packs in one all-gather
    count = n  # one per step: the greedy argmax pack, or the sampled logits shard
    if has_head and pure_prefix_len < n:
        if sampled:
            count += n - 1  # the sampled token's embedding row (not after the last step)
        if pure_prefix_len == 0:
            count += 1  # the bonus row cannot ride with step 0, whose logits need the GRU
    return count
