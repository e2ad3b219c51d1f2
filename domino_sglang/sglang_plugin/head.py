"""The Domino draft head as SGLang runs it: one seam, capture-safe, no SGLang import.

``DominoDraftSampler`` replaces SGLang's ``_DflashDraftSampler`` (the greedy argmax that
DFlashWorkerV2 folds into the draft CUDA graph). It is called by the capture tail hook right
after the draft backbone, with

* ``hidden_states [bs*B, D]``: the draft's post-final-norm hidden states, every block position;
* ``input_ids [bs*B]``: the block ids, the bonus token at ``::B``;

and writes the ``bs*(B-1)`` greedy proposals into the static buffer ``out`` (int64). It does
no host synchronisation and allocates nothing whose address must survive the graph, so the
whole head (GRU + low-rank correction + argmax) is recorded in the draft graph. At replay the
static ``input_ids`` buffer holds the real block ids, so the GRU sees the real bonus.

The single seam: :func:`resolve_head_impl` returns the function that does the math,

    head_fn(hidden [bs, B, D], bonus [bs] int64, lm_head [V, D], embed [V', D],
            head: HeadWeights | None, *, shift_label: bool, pure_prefix_len: int,
            out [bs, B-1] int64) -> None

``domino_sglang.ops.domino_head.domino_head`` (fused Triton kernels) when that module exists
and passes a self-check against :func:`torch_domino_head` on small random inputs, else
:func:`torch_domino_head`. ``DOMINO_HEAD_IMPL=torch|ops|auto`` (default ``auto``) forces one.
The math is that of ``domino_sglang.spec.domino_rollout_ref`` (greedy): proposal i reads
``hidden[:, i]`` when ``shift_label`` else ``hidden[:, i+1]``; the GRU consumes the target
embeddings of ``[bonus, d_0 .. d_{i-1}]``; the correction applies for ``i >= pure_prefix_len``.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.drafter import HeadWeights

logger = logging.getLogger(__name__)

HeadFn = Callable[..., None]


def _gru_step(x: torch.Tensor, s: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor):
    """Bias-free GRU cell (gate order r, z, n); matmuls in the weight dtype, gates in fp32."""
    gi = torch.matmul(x.to(w_ih.dtype), w_ih.t()).float()
    gh = torch.matmul(s.to(w_hh.dtype), w_hh.t()).float()
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * s


def _correction(h: torch.Tensor, s: torch.Tensor, head: HeadWeights) -> torch.Tensor:
    a = torch.matmul(torch.cat([h.to(head.w1.dtype), s.to(head.w1.dtype)], dim=-1), head.w1.t())
    return torch.matmul(F.silu(a.float()).to(head.w2.dtype), head.w2.t()).float()


def torch_domino_head(hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                      embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                      pure_prefix_len: int, out: torch.Tensor) -> None:
    """Greedy Domino rollout over one block per request; writes ``out [bs, B-1]``.

    Capture-safe: a Python loop over the B-1 positions (unrolled in the graph), fixed shapes,
    no ``.item()``, no data-dependent control flow. lm_head [V, D] must already be cut to the
    real vocabulary (no padding rows).
    """
    bs, block, _ = hidden.shape
    n = block - 1
    z = hidden[:, :n] if shift_label else hidden[:, 1:]
    if head is None:
        logits = torch.matmul(z.to(lm_head.dtype), lm_head.t())
        out.copy_(torch.argmax(logits, dim=-1))
        return
    s = torch.zeros(bs, head.w_hh.shape[1], dtype=torch.float32, device=hidden.device)
    s = _gru_step(F.embedding(bonus, embed), s, head.w_ih, head.w_hh)
    for i in range(n):
        zi = z[:, i]
        li = torch.matmul(zi.to(lm_head.dtype), lm_head.t()).float()
        if i >= pure_prefix_len:
            li = li + _correction(zi, s, head)
        tok = torch.argmax(li, dim=-1)
        out[:, i].copy_(tok)
        if i + 1 < n:
            s = _gru_step(F.embedding(tok, embed), s, head.w_ih, head.w_hh)


def _self_check(fn: HeadFn, device: torch.device, dtype: torch.dtype) -> str | None:
    """Compare ``fn`` with the torch head on small random inputs; None if they agree."""
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    bs, block, d, g, r, v = 3, 5, 64, 32, 16, 256
    head = HeadWeights(rnd(3 * g, d, scale=0.2), rnd(3 * g, g, scale=0.2),
                       rnd(r, d + g, scale=0.2), rnd(v, r, scale=0.5))
    hidden, lm_head, embed = rnd(bs, block, d), rnd(v, d, scale=0.3), rnd(v, d)
    bonus = torch.randint(0, v, (bs,), generator=gen).to(device)
    want = torch.empty(bs, block - 1, dtype=torch.long, device=device)
    got = torch.full_like(want, -1)
    for h in (None, head):
        torch_domino_head(hidden, bonus, lm_head, embed, h, shift_label=True,
                          pure_prefix_len=1, out=want)
        try:
            fn(hidden, bonus, lm_head, embed, h, shift_label=True, pure_prefix_len=1, out=got)
        except Exception as exc:  # an incompatible seam signature or a kernel failure
            return f"{type(exc).__name__}: {exc}"
        if not torch.equal(want, got):
            return "proposals differ from the torch head"
    return None


def resolve_head_impl(device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> tuple[str, HeadFn]:
    """Pick the head implementation once (before graph capture): ``(name, fn)``."""
    choice = os.environ.get("DOMINO_HEAD_IMPL", "auto").strip().lower()
    if choice not in ("auto", "torch", "ops"):
        raise ValueError(f"DOMINO_HEAD_IMPL={choice!r}: expected auto, torch or ops")
    if choice == "torch":
        return "torch", torch_domino_head
    try:
        from domino_sglang.ops.domino_head import domino_head as ops_fn  # type: ignore
    except Exception as exc:  # absent, or broken while under development
        if choice == "ops":
            raise ValueError(f"DOMINO_HEAD_IMPL=ops but domino_sglang.ops.domino_head is "
                             f"not importable ({exc})") from None
        return "torch", torch_domino_head
    problem = _self_check(ops_fn, torch.device(device), dtype)
    if problem is None:
        return "ops", ops_fn
    if choice == "ops":
        raise ValueError(f"DOMINO_HEAD_IMPL=ops: domino_sglang.ops.domino_head.domino_head "
                         f"failed its self-check ({problem})")
    logger.warning("domino_sglang.ops.domino_head failed its self-check (%s); using the "
                   "PyTorch head", problem)
    return "torch", torch_domino_head


class DominoDraftSampler:
    """Capture-safe greedy Domino head (drop-in for SGLang's ``_DflashDraftSampler``, TP=1).

    ``out`` is a static ``[max_bs*(B-1)]`` int64 buffer; the worker reads
    ``out[:bs*(B-1)]`` after the draft forward (graph replay or eager).
    """

    def __init__(self, *, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None,
                 block_size: int, shift_label: bool, pure_prefix_len: int, max_bs: int,
                 head_fn: HeadFn | None = None, impl_name: str = "torch"):
        if block_size < 2:
            raise ValueError(f"block_size={block_size}: must be >= 2")
        self.lm_head = lm_head
        self.embed = embed
        self.head = head
        self.block_size = int(block_size)
        self.shift_label = bool(shift_label)
        self.pure_prefix_len = int(pure_prefix_len)
        self.max_bs = int(max_bs)
        self.head_fn = head_fn or torch_domino_head
        self.impl_name = impl_name
        self.out = torch.empty((self.max_bs * (self.block_size - 1),), dtype=torch.int64,
                               device=lm_head.device)

    def propose(self, hidden_states: torch.Tensor, bonus: torch.Tensor,
                out: torch.Tensor) -> None:
        """hidden_states [bs*B, D] (all block positions), bonus [bs] -> out [bs, B-1]."""
        bs = hidden_states.shape[0] // self.block_size
        hidden = hidden_states[: bs * self.block_size].view(bs, self.block_size, -1)
        self.head_fn(hidden, bonus, self.lm_head, self.embed, self.head,
                     shift_label=self.shift_label, pure_prefix_len=self.pure_prefix_len,
                     out=out)

    def __call__(self, hidden_states: torch.Tensor, input_ids: torch.Tensor | None = None):
        if input_ids is None:
            raise RuntimeError("the Domino draft head needs the block input_ids (bonus at ::B)")
        bs = hidden_states.shape[0] // self.block_size
        if bs > self.max_bs:
            raise RuntimeError(f"draft batch {bs} exceeds the head's max_bs={self.max_bs}")
        bonus = input_ids[: bs * self.block_size].view(bs, self.block_size)[:, 0]
        out = self.out[: bs * (self.block_size - 1)].view(bs, self.block_size - 1)
        self.propose(hidden_states, bonus, out)
