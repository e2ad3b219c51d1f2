"""Drafter training objective: anchors, block-sparse masks, decayed CE and the curriculum.

Label alignment (``shift_label=True``, the public Domino convention, used here for every
drafter including plain DFlash): for an anchor at sequence position ``a`` the block input is
``[x_a, MASK, ..., MASK]`` at positions ``a .. a+K-1``; proposal ``i`` (``0 <= i <= K-2``) is
read from block hidden position ``i`` and its label is ``x_{a+i+1}``. With ``shift_label=False``
(public DFlash) proposal ``i`` reads hidden position ``i+1``; the label is the same token.
The context of the block is the target features of positions ``< a`` (at inference the context
holds every committed token before the bonus token, and the bonus ``x_a`` is block position 0).
The Domino GRU state for proposal ``i`` has consumed the target embeddings of
``[x_a, ..., x_{a+i}]`` (ground truth: teacher forcing); the correction applies for
``i >= pure_draft_prefix_len``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.drafter import DominoDrafter
from ..core.rollout import proposal_hidden


def decay_weights(num_proposals: int, gamma: float, device=None) -> torch.Tensor:
    """w_k = exp(-(k-1)/gamma) for the block position k = i + 1 of proposal i: [K-1]."""
    i = torch.arange(num_proposals, dtype=torch.float32, device=device)
    return torch.exp(-i / gamma)


def progress(step: int, total_steps: int, elapsed_s: float, time_limit_s: float | None) -> float:
    """Training progress in [0, 1]: steps done, or the time budget spent, whichever is larger.

    Schedules (learning rate, curriculum) follow it, so a run with a time budget still anneals
    fully and ends its curriculum, whatever the speed of the machine."""
    frac = step / total_steps
    if time_limit_s is not None:
        frac = max(frac, elapsed_s / time_limit_s)
    return min(1.0, frac)


def curriculum_lambda(frac: float, curriculum_frac: float, enabled: bool = True) -> float:
    """Weight of CE_base at training progress ``frac``: falls linearly from 1 to 0 over the
    first ``curriculum_frac`` of training (0 when disabled)."""
    if not enabled or curriculum_frac <= 0:
        return 0.0
    return max(0.0, 1.0 - frac / curriculum_frac)


def sample_anchors(loss_mask: torch.Tensor, lengths: torch.Tensor, num_anchors: int,
                   generator: torch.Generator | None = None):
    """Anchor positions [B, N] and validity [B, N] (bool).

    A position ``a`` is a valid anchor when ``a + 1 < length`` and ``x_{a+1}`` is a label
    (``loss_mask[a+1]``). Anchors are drawn without replacement, uniformly among valid ones;
    rows with fewer valid positions get invalid (zero-weight) anchors at position 0.
    """
    b, length = loss_mask.shape
    pos = torch.arange(length, device=loss_mask.device)
    nxt = torch.zeros_like(loss_mask)
    nxt[:, :-1] = loss_mask[:, 1:]
    valid = nxt & (pos[None] + 1 < lengths[:, None])
    n = min(num_anchors, length)
    scores = torch.rand(b, length, generator=generator, device="cpu").to(loss_mask.device)
    scores = torch.where(valid, scores, torch.full_like(scores, -1.0))
    top, idx = scores.topk(n, dim=1)
    ok = top >= 0
    anchors = torch.where(ok, idx, torch.zeros_like(idx))
    anchors, order = anchors.sort(dim=1)
    return anchors, ok.gather(1, order)


def block_attention_mask(anchors: torch.Tensor, context_len: int, block_size: int) -> torch.Tensor:
    """bool [B, 1, N*K, C + N*K] (True = may attend).

    Block j's queries see context positions strictly before its anchor ``a_j`` and every position
    of block j (bidirectional); nothing of the other blocks.
    """
    b, n = anchors.shape
    k = block_size
    dev = anchors.device
    ctx = torch.arange(context_len, device=dev)[None, None, :] < anchors[:, :, None]  # [B, N, C]
    ctx = ctx.repeat_interleave(k, dim=1)  # [B, N*K, C]
    blk_id = torch.arange(n * k, device=dev) // k
    blk = (blk_id[:, None] == blk_id[None, :])[None].expand(b, -1, -1)  # [B, N*K, N*K]
    return torch.cat([ctx, blk], dim=-1)[:, None]


@dataclass
class LossOutput:
    loss: torch.Tensor
    ce_base: torch.Tensor
    ce_final: torch.Tensor
    acc_base: torch.Tensor  # weighted top-1 accuracy of the base proposals (no decay)
    acc_final: torch.Tensor
    num_labels: torch.Tensor
    acc_per_position: torch.Tensor | None = None  # [K-1] top-1 accuracy of the final proposals
    tau_estimate: torch.Tensor | None = None  # 1 + mean leading run of correct proposals


def acceptance_metrics(logits: torch.Tensor, labels: torch.Tensor,
                       label_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tau-like training metrics of greedy proposals: logits [..., K-1, V], labels / label_mask
    [..., K-1] -> (top-1 accuracy per block position [K-1], tau estimate).

    The estimate is 1 + the mean number of leading correct proposals per block (the block's
    first label must be trainable; a position without a label ends the run): what greedy
    verification would accept with the labels as the target's choices, under teacher forcing
    (the GRU saw the labels, as in training), so it is an upper-side proxy of tau."""
    with torch.no_grad():
        hit = (logits.argmax(-1) == labels) & label_mask
        m = label_mask.float().flatten(0, -2)
        acc = (hit.float().flatten(0, -2).sum(0) / m.sum(0).clamp_min(1))
        blocks = label_mask[..., 0].flatten()
        run = torch.cumprod(hit.float(), dim=-1).sum(-1).flatten()
        tau = 1.0 + (run * blocks).sum() / blocks.float().sum().clamp_min(1)
    return acc, tau


def _weighted_ce(logits: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), reduction="none")
    return (ce * w.flatten()).sum() / w.sum().clamp_min(1e-6)


@dataclass
class BlockLogits:
    base: torch.Tensor  # [B, N, K-1, V] lm_head(z_i)
    final: torch.Tensor | None  # [B, N, K-1, V] base + correction (None without a head)
    labels: torch.Tensor  # [B, N, K-1] x_{a+1+i}
    label_mask: torch.Tensor  # [B, N, K-1] bool: a label to train on


def block_logits(drafter: DominoDrafter, embed_weight: torch.Tensor,
                 lm_head_weight: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                 lengths: torch.Tensor, target_features: torch.Tensor, anchors: torch.Tensor,
                 anchor_ok: torch.Tensor, *, use_head: bool = True) -> BlockLogits:
    """Logits of every proposal of every sampled block, in one drafter forward.

    input_ids/loss_mask [B, L]; target_features [B, L, n_layers*D] (frozen target);
    anchors/anchor_ok [B, N]. All blocks of a row share one context cache (the features of all
    L positions) and are kept apart by :func:`block_attention_mask`.
    """
    cfg = drafter.config
    k = cfg.resolved_block_size
    b, length = input_ids.shape
    n = anchors.shape[1]
    dev = input_ids.device
    offs = torch.arange(k, device=dev)
    pos = anchors[:, :, None] + offs  # [B, N, K] block positions a..a+K-1

    # block input [x_a, MASK, ..., MASK]
    block_ids = torch.full((b, n, k), cfg.mask_token_id, dtype=torch.long, device=dev)
    block_ids[:, :, 0] = input_ids.gather(1, anchors)
    block_embeds = F.embedding(block_ids.view(b, n * k), embed_weight)

    # labels x_{a+1+i}; trained where loss_mask is set, inside the sequence, valid anchor
    lab_pos = anchors[:, :, None] + 1 + offs[: k - 1]  # [B, N, K-1]
    in_seq = lab_pos < lengths[:, None, None]
    lab_pos_c = lab_pos.clamp(max=length - 1)
    labels = input_ids.gather(1, lab_pos_c.view(b, -1)).view(b, n, k - 1)
    lmask = loss_mask.gather(1, lab_pos_c.view(b, -1)).view(b, n, k - 1) & in_seq
    lmask = lmask & anchor_ok[:, :, None]

    ctx = drafter.context_kv(drafter.project_context(target_features),
                             torch.arange(length, device=dev)[None].expand(b, -1))
    mask = block_attention_mask(anchors, length, k)
    hidden = drafter(block_embeds, pos.view(b, n * k), ctx, mask).view(b * n, k, -1)
    z = proposal_hidden(hidden, cfg.shift_label)  # [B*N, K-1, D]
    base = (z @ lm_head_weight.t()).view(b, n, k - 1, -1)
    final = None
    if use_head and drafter.has_head:
        # teacher-forced GRU over the ground-truth embeddings [x_a, ..., x_{a+K-2}]:
        # its output i has consumed [x_a .. x_{a+i}], the state the rollout has for proposal i
        gru_pos = (anchors[:, :, None] + offs[: k - 1]).clamp(max=length - 1)
        gru_ids = input_ids.gather(1, gru_pos.view(b, -1)).view(b * n, k - 1)
        s, _ = drafter.prefix_gru(F.embedding(gru_ids, embed_weight).to(z.dtype))
        corr = drafter.embed_proj(torch.cat([z, s.to(z.dtype)], dim=-1))  # [B*N, K-1, V]
        gate = (torch.arange(k - 1, device=dev) >= cfg.pure_draft_prefix_len).to(corr.dtype)
        final = base + (corr * gate[None, :, None]).view(b, n, k - 1, -1)
    return BlockLogits(base, final, labels, lmask)


def drafter_loss(drafter: DominoDrafter, embed_weight: torch.Tensor, lm_head_weight: torch.Tensor,
                 input_ids: torch.Tensor, loss_mask: torch.Tensor, lengths: torch.Tensor,
                 target_features: torch.Tensor, anchors: torch.Tensor, anchor_ok: torch.Tensor,
                 *, gamma: float, lam: float, use_head: bool) -> LossOutput:
    """The training loss of one batch: CE with per-position decay exp(-(k-1)/gamma).

    ``lam`` weighs CE_base: loss = (1-lam) CE_final + lam CE_base (the base-anchored
    curriculum); without a head (or ``use_head=False``) loss = CE_base.
    """
    out = block_logits(drafter, embed_weight, lm_head_weight, input_ids, loss_mask, lengths,
                       target_features, anchors, anchor_ok, use_head=use_head)
    k1 = out.labels.shape[-1]
    w_flat = out.label_mask.float()
    w = w_flat * decay_weights(k1, gamma, input_ids.device)

    def acc(logits):
        with torch.no_grad():
            hit = (logits.argmax(-1) == out.labels).float()
            return (hit * w_flat).sum() / w_flat.sum().clamp_min(1)

    ce_base = _weighted_ce(out.base, out.labels, w)
    if out.final is not None:
        ce_final = _weighted_ce(out.final, out.labels, w)
        loss = ce_base if lam >= 1.0 else (1.0 - lam) * ce_final + lam * ce_base
        acc_final = acc(out.final)
    else:
        ce_final, loss, acc_final = ce_base, ce_base, None
    acc_base = acc(out.base)
    acc_pos, tau_est = acceptance_metrics(out.base if out.final is None else out.final,
                                          out.labels, out.label_mask)
    return LossOutput(loss, ce_base.detach(), ce_final.detach(), acc_base,
                      acc_base if acc_final is None else acc_final, w_flat.sum(), acc_pos,
                      tau_est)


def lr_at(frac: float, base_lr: float, warmup_frac: float, min_ratio: float) -> float:
    """At progress ``frac``: linear warm-up over ``warmup_frac``, then cosine decay to
    ``min_ratio * base_lr``."""
    if frac < warmup_frac:
        return base_lr * max(frac / warmup_frac, 1e-3)
    t = (frac - warmup_frac) / max(1e-9, 1 - warmup_frac)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
