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

Implementations (serve config ``head.impl``; developer switch ``DOMINO_HEAD_IMPL``, parsed by
``options.parse_head_options``):

* ``torch``: :func:`torch_domino_head`, plain PyTorch ops (matmuls in the weight dtype).
* ``triton``: :class:`TritonHeadImpl`, the fused kernels of ``domino_sglang.kernels.domino_head``.
  The seam function has a ``bind(...)`` method; :class:`DominoDraftSampler` calls it once at
  build time, which runs ``prepare_head`` (GRU input table, ``DOMINO_HEAD_GI_TABLE``) and
  preallocates the kernel workspace and the base-logits buffer [max_bs * B, V]
  (``DOMINO_HEAD_BASE_LOGITS``) for ``max_bs`` requests. Each call is then one lm_head GEMM
  into that buffer, the fused rollout, and a copy of the proposals into ``out``.
* ``auto`` (default): ``triton`` on CUDA when it passes :func:`self_check` (exact proposals vs
  ``domino_sglang.core.domino_rollout_ref`` on a tiny random problem, in the serving dtype),
  else ``torch``; ``triton`` forced and failing its check is a start-up error.

At ``--tp-size`` >= 2 the seam function is :class:`TorchDominoHeadTP` (the ``torch`` math over
this rank's vocabulary shards, one all-gather per proposal; docs/tp.md): ``auto`` and ``torch``
pick it, ``triton`` is a start-up error.

The math is that of ``domino_sglang.core.domino_rollout_ref`` (greedy): proposal i reads
``hidden[:, i]`` when ``shift_label`` else ``hidden[:, i+1]``; the GRU consumes the target
embeddings of ``[bonus, d_0 .. d_{i-1}]``; the correction applies for ``i >= pure_prefix_len``.
The Triton head accumulates in fp32 like the spec; the PyTorch head rounds its matmuls to the
weight dtype (bf16 when serving), so at bf16 the two can differ on near ties.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.drafter import HeadWeights
from ..core.sharded import (check_layout, greedy_step, group_world_rank, owner_extra, owner_rows,
                            shard_vocab_rows)
from ..ops.domino_head import pick_variant  # the one place that picks the launch variant
from .options import HeadOptions, parse_head_options

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


# ---------------------------------------------------------------------------------------------
# tensor parallel (TP >= 2): the PyTorch head over this rank's vocabulary shard
# ---------------------------------------------------------------------------------------------

class TorchDominoHeadTP:
    """:func:`torch_domino_head` over vocabulary shards (``--tp-size`` >= 2), a seam function.

    Called with this rank's shards: ``lm_head [Vp, D]`` and ``embed [Vp, D]`` (global rows
    ``[shard_start, shard_start + Vp)``, padding rows past ``vocab_size`` allowed, never picked)
    and ``head`` with W2 ``[Vp, R]`` (GRU and W1 replicated). Per proposal: the local logits
    (+ correction) in the weight dtype like :func:`torch_domino_head`, then ONE all-gather of
    ``[max, global id, embedding row]`` through ``group`` (SGLang's TP ``GroupCoordinator``)
    and the same pick on every rank (``core.sharded.greedy_step``; tie order of a full-vocabulary
    ``torch.argmax``). The bonus row rides with step 0 when ``pure_prefix_len >= 1``, else one
    extra all-gather per block. Without a head (or when the pure prefix covers the block) all
    B-1 proposals share one all-gather. ``core.sharded.collectives_per_block`` gives the count.

    Capture-safe like the TP=1 head: fixed shapes, no host sync, no ``.item()``; the padding
    mask is built here (static), the gather buffers come from the capture's memory pool, and
    the all-gathers go through the coordinator's pynccl path (what SGLang's own DFLASH sampler
    records in the draft graph at TP > 1). Every rank must call it with the same batch.
    """

    def __init__(self, *, group, shard_start: int, vocab_shard: int, vocab_size: int,
                 device: torch.device | str):
        self.group = group
        self.world, self.rank = group_world_rank(group)
        self.shard_start, self.vp, self.vocab_size = map(int, (shard_start, vocab_shard,
                                                               vocab_size))
        check_layout(self.world, self.rank, self.vp, self.shard_start, self.vocab_size)
        self.pad = (self.shard_start + torch.arange(self.vp, device=device)) >= self.vocab_size

    def __call__(self, hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                 embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                 pure_prefix_len: int, out: torch.Tensor) -> None:
        if lm_head.shape[0] != self.vp or embed.shape[0] != self.vp or (
                head is not None and head.w2.shape[0] != self.vp):
            raise ValueError(f"the TP head expects this rank's {self.vp}-row vocabulary shard of "
                             f"lm_head / embed / W2, got {lm_head.shape[0]} / {embed.shape[0]} / "
                             f"{None if head is None else head.w2.shape[0]} rows")
        bs, block, d = hidden.shape
        n = block - 1
        z = hidden[:, :n] if shift_label else hidden[:, 1:]
        use_head = head is not None and pure_prefix_len < n  # else the head changes nothing
        group, world, vp, start = self.group, self.world, self.vp, self.shard_start
        if not use_head:  # no recurrence: the whole block in one all-gather
            li = torch.matmul(z.to(lm_head.dtype), lm_head.t()).float()
            li = li.masked_fill(self.pad, -float("inf")).reshape(bs * n, vp)
            out.copy_(greedy_step(li, embed, start, group, world, with_row=False)[0].view(bs, n))
            return
        s = fused_bonus = None
        bonus_row = F.embedding((bonus - start).clamp(0, vp - 1), embed).float()
        if pure_prefix_len >= 1:
            fused_bonus = bonus_row  # step 0 needs no GRU state: the row rides with it
        else:
            s = self._gru0(owner_rows(bonus_row, bonus, vp, group, world), head)
        for i in range(n):
            zi = z[:, i]
            li = torch.matmul(zi.to(lm_head.dtype), lm_head.t()).float()
            if i >= pure_prefix_len:
                li = li + _correction(zi, s, head)
            li = li.masked_fill(self.pad, -float("inf"))
            extra = fused_bonus if i == 0 else None
            tok, row, gathered = greedy_step(li, embed, start, group, world,
                                             with_row=i + 1 < n, extra=extra)
            if extra is not None:
                s = self._gru0(owner_extra(gathered, bonus, vp, d), head)
            out[:, i].copy_(tok)
            if row is not None:
                s = _gru_step(row, s, head.w_ih, head.w_hh)

    @staticmethod
    def _gru0(x: torch.Tensor, head: HeadWeights) -> torch.Tensor:
        s = torch.zeros(x.shape[0], head.w_hh.shape[1], dtype=torch.float32, device=x.device)
        return _gru_step(x, s, head.w_ih, head.w_hh)


def vocab_shard_layout(lm_head, embed_module, *, world: int, vocab_size: int):
    """``(shard_start, Vp, embed_shard [Vp, D])`` of this rank for the TP head, from SGLang's
    ``ParallelLMHead`` / ``VocabParallelEmbedding`` ``shard_indices`` (rank r holds rows
    ``[r*Vp, (r+1)*Vp)`` of the vocabulary padded to ``world*Vp``). Raises ``RuntimeError``
    (naming ``--tp-size``) for what the TP head cannot serve: no shard metadata, added (LoRA)
    vocabulary, or an input embedding laid out neither like the LM head nor replicated."""
    shard = getattr(lm_head, "shard_indices", None)
    if shard is None:
        raise RuntimeError(f"domino --tp-size {world}: the target lm_head "
                           f"({type(lm_head).__name__}) has no shard_indices (not a "
                           "ParallelLMHead), so its vocabulary shard is unknown")
    if int(shard.num_added_elements) != 0:
        raise RuntimeError(f"domino --tp-size {world}: added vocabulary "
                           f"({shard.num_added_elements} rows) is not supported")
    start, vp = int(shard.padded_org_vocab_start_index), int(shard.num_org_elements_padded)
    if int(lm_head.weight.shape[0]) != vp:
        raise RuntimeError(f"domino --tp-size {world}: lm_head shard has "
                           f"{lm_head.weight.shape[0]} rows, shard_indices say {vp}")
    weight = embed_module.weight
    esh = getattr(embed_module, "shard_indices", None)
    if esh is not None and int(esh.padded_org_vocab_start_index) == start \
            and int(esh.num_org_elements_padded) == vp and int(weight.shape[0]) == vp:
        return start, vp, weight
    replicated = esh is None or (int(esh.org_vocab_start_index) == 0
                                 and int(esh.num_org_elements) >= vocab_size)
    if replicated and int(weight.shape[0]) >= vocab_size:  # SGLANG_ENABLE_EMBED_REPLICATION
        return start, vp, shard_vocab_rows(weight[:vocab_size], start, vp)
    raise RuntimeError(f"domino --tp-size {world}: the target input embedding "
                       f"({tuple(weight.shape)}) is sharded unlike the lm_head (rows "
                       f"[{start}, {start + vp}))")


# ---------------------------------------------------------------------------------------------
# the fused Triton head behind the seam
# ---------------------------------------------------------------------------------------------

_GI_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "none": None}


def _gi_table(embed: torch.Tensor, w_ih: torch.Tensor, dtype: torch.dtype,
              chunk: int = 8192) -> torch.Tensor:
    """E_ih = embed @ W_ih^T [V', 3G] in ``dtype``, fp32 GEMMs over row chunks (the same values
    as ``prepare_head``'s one-shot table without its transient fp32 copy of the embedding)."""
    w = w_ih.float()
    table = torch.empty(embed.shape[0], w.shape[0], dtype=dtype, device=embed.device)
    for r0 in range(0, embed.shape[0], chunk):
        table[r0:r0 + chunk] = (embed[r0:r0 + chunk].float() @ w.t()).to(dtype)
    return table


_PREPARED: list = []  # [(key, sources, HeadKernelWeights)]: the most recent preparation


def _prepared(head: HeadWeights, embed: torch.Tensor, gi_table: str):
    """``prepare_head`` + the GI table, shared by every head bound to the same weights (the
    worker binds one for the draft graphs and one for its eager path: one GI table, not two).
    The cache holds the source tensors, so a matching address is the same live memory."""
    from domino_sglang.kernels.domino_head import prepare_head

    srcs = (head.w_ih, head.w_hh, head.w1, head.w2, embed)
    key = (gi_table,) + tuple((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device)
                              for t in srcs)
    if _PREPARED and _PREPARED[0][0] == key:
        return _PREPARED[0][2]
    _PREPARED.clear()
    weights = prepare_head(head, embed, gi_table_dtype=None)
    gi_dtype = _GI_DTYPES[gi_table]
    if gi_dtype is not None:
        weights.gi_table = _gi_table(embed, head.w_ih, gi_dtype)
    _PREPARED.append((key, srcs, weights))
    return weights


def _capturing(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


class _TritonBuffers:
    """Everything one call touches for up to ``rows`` requests (allocated once)."""

    def __init__(self, rows: int, block: int, vocab: int, rank: int, gru: int,
                 device: torch.device, base_dtype: torch.dtype):
        from domino_sglang.kernels.domino_head import DominoHeadWorkspace

        self.rows = rows
        self.ws = DominoHeadWorkspace(rows, block, vocab, rank, gru, device)
        self.base = torch.empty(rows * block, vocab, dtype=base_dtype, device=device)
        self.cast: torch.Tensor | None = None  # hidden cast to the lm_head dtype, if needed


class TritonDominoHead:
    """The fused Triton head bound to one sampler: weights prepared, buffers preallocated.

    Capture-safe for ``bs <= max_bs``: a call is ``mm(hidden, lm_head^T) -> base`` (static
    buffer), ``domino_head_launch`` (static workspace; no host sync, no allocation) and
    ``out.copy_``. Eager calls with ``bs > max_bs`` (SGLang's eager draft path builds its sampler
    with ``max_bs=1``) use a separate overflow set of buffers, grown as needed and never touched
    by a captured graph; inside a capture ``bs > max_bs`` is an error.
    """

    def __init__(self, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None, *,
                 block_size: int, max_bs: int, gi_table: str = "fp32",
                 base_logits: str = "fp32", variant: str = "auto"):
        if gi_table not in _GI_DTYPES:
            raise ValueError(f"gi_table={gi_table!r}: expected fp32, bf16 or none")
        if base_logits not in ("fp32", "model"):
            raise ValueError(f"base_logits={base_logits!r}: expected fp32 or model")
        if block_size < 2 or max_bs < 1:
            raise ValueError(f"block_size={block_size}, max_bs={max_bs}: need >= 2 and >= 1")
        if lm_head.stride(-1) != 1:
            raise ValueError("lm_head must have a unit last stride")
        self.lm_head, self.embed, self.head = lm_head, embed, head
        self.block_size, self.max_bs = int(block_size), int(max_bs)
        self.vocab = int(lm_head.shape[0])
        self.device = lm_head.device
        self.gi_table = gi_table
        self.variant = variant
        self.weights = None
        if head is not None:
            if int(head.w2.shape[0]) != self.vocab:
                raise ValueError(f"head vocabulary {head.w2.shape[0]} != lm_head vocabulary "
                                 f"{self.vocab}")
            self.weights = _prepared(head, embed, gi_table)
        self.rank = self.weights.rank if self.weights is not None else 16
        self.gru = self.weights.gru_dim if self.weights is not None else 16
        # fp32 base logits: the spec's numerics. A bf16/fp16 lm_head needs the CUDA-only
        # mm(out_dtype=float32) (fp32 accumulation and output); else the lm_head dtype.
        self.base_dtype = lm_head.dtype
        if base_logits == "fp32" and lm_head.dtype != torch.float32:
            problem = self._probe_fp32_gemm()
            if problem is None:
                self.base_dtype = torch.float32
            else:
                (logger.warning if self.device.type == "cuda" else logger.info)("Domino Triton head: base logits in %s (no fp32-output %s GEMM "
                               "here: %s)", lm_head.dtype, lm_head.dtype, problem)
        self.buffers = self._alloc(self.max_bs)
        self._overflow: _TritonBuffers | None = None
        logger.info("Domino Triton head bound: max_bs=%d block=%d V=%d, gi table %s, base "
                    "logits %s, %.1f MiB of device memory", self.max_bs, self.block_size,
                    self.vocab, gi_table, self.base_dtype, self.nbytes / 2 ** 20)

    def _probe_fp32_gemm(self) -> str | None:
        """Whether ``mm(x, lm_head^T, out_dtype=float32)`` runs here (CUDA only in torch 2.13)."""
        if self.device.type != "cuda":
            return f"needs CUDA, not {self.device.type}"
        try:
            x = torch.zeros(2, self.lm_head.shape[1], dtype=self.lm_head.dtype,
                            device=self.device)
            o = torch.empty(2, 8, dtype=torch.float32, device=self.device)
            torch.mm(x, self.lm_head[:8].t(), out_dtype=torch.float32, out=o)
        except Exception as exc:  # an older torch, or no kernel for this dtype
            return f"{type(exc).__name__}: {exc}"
        return None

    def _alloc(self, rows: int) -> _TritonBuffers:
        return _TritonBuffers(rows, self.block_size, self.vocab, self.rank, self.gru,
                              self.device, self.base_dtype)

    @property
    def nbytes(self) -> int:
        """Device memory held by the prepared table and the capture buffers."""
        t = [self.buffers.base, self.buffers.ws.a_h, self.buffers.ws.act, self.buffers.ws.state,
             self.buffers.ws.part_val, self.buffers.ws.part_idx, self.buffers.ws.tokens]
        if self.weights is not None and self.weights.gi_table is not None:
            t.append(self.weights.gi_table)
        return sum(x.numel() * x.element_size() for x in t)

    def _buffers_for(self, bs: int, like: torch.Tensor) -> _TritonBuffers:
        if bs <= self.max_bs:
            return self.buffers
        if _capturing(like):
            raise RuntimeError(f"draft batch {bs} exceeds the Triton head's max_bs="
                               f"{self.max_bs} inside a CUDA graph capture")
        if self._overflow is None or self._overflow.rows < bs:
            self._overflow = None
            self._overflow = self._alloc(1 << (bs - 1).bit_length())
        return self._overflow

    def _gemm(self, h2: torch.Tensor, base: torch.Tensor) -> None:
        if base.dtype == h2.dtype:
            torch.matmul(h2, self.lm_head.t(), out=base)
        else:  # bf16/fp16 operands, fp32 accumulation and output (CUDA)
            torch.mm(h2, self.lm_head.t(), out_dtype=base.dtype, out=base)

    def __call__(self, hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                 embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                 pure_prefix_len: int, out: torch.Tensor) -> None:
        from domino_sglang.kernels.domino_head_fast import domino_head_launch

        bs, block, d = hidden.shape
        if block != self.block_size:
            raise ValueError(f"block {block} != the bound block_size {self.block_size}")
        if (head is not self.head or lm_head.data_ptr() != self.lm_head.data_ptr()
                or lm_head.shape != self.lm_head.shape):
            raise ValueError("the Triton head was bound to other lm_head/head weights")
        buf = self._buffers_for(bs, hidden)
        h2 = hidden.reshape(bs * block, d)
        if h2.dtype != self.lm_head.dtype:  # e.g. an fp16 draft on a bf16 target
            if buf.cast is None or buf.cast.dtype != self.lm_head.dtype:
                buf.cast = torch.empty(buf.rows * block, d, dtype=self.lm_head.dtype,
                                       device=self.device)
            cast = buf.cast[: bs * block]
            cast.copy_(h2)
            h2 = cast
        base = buf.base[: bs * block]
        self._gemm(h2, base)
        n = block - 1
        base3 = base.view(bs, block, self.vocab)
        hid3 = h2.view(bs, block, d)
        sl = slice(0, n) if shift_label else slice(1, block)
        if self.weights is None:  # plain DFlash drafter: no recurrence, one argmax for the block
            torch.argmax(base3[:, sl], dim=-1, out=buf.ws.tokens[:bs])
            out.copy_(buf.ws.tokens[:bs])
            return
        tokens = domino_head_launch(hid3[:, sl], base3[:, sl], bonus, self.weights, buf.ws,
                                    pure_prefix_len=int(pure_prefix_len),
                                    variant=pick_variant(self.variant, bs, hid3.device))
        out.copy_(tokens)


class TritonHeadImpl:
    """The seam function of the Triton head (``resolve_head_impl`` returns one).

    :meth:`bind` builds the capture-safe :class:`TritonDominoHead` for one sampler. Calling the
    object directly (the plain seam contract) binds on first use and rebinds when the weights,
    the block size or a larger batch arrive: fine eagerly (self-check, tests), not under capture.
    """

    def __init__(self, gi_table: str = "fp32", base_logits: str = "fp32",
                 variant: str = "auto"):
        self.gi_table, self.base_logits, self.variant = gi_table, base_logits, variant
        self._bound: TritonDominoHead | None = None

    def bind(self, *, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None,
             block_size: int, max_bs: int) -> TritonDominoHead:
        return TritonDominoHead(lm_head, embed, head, block_size=block_size, max_bs=max_bs,
                                gi_table=self.gi_table, base_logits=self.base_logits,
                                variant=self.variant)

    def __call__(self, hidden, bonus, lm_head, embed, head, *, shift_label: bool,
                 pure_prefix_len: int, out: torch.Tensor) -> None:
        b = self._bound
        if (b is None or b.head is not head or b.embed is not embed
                or b.lm_head.data_ptr() != lm_head.data_ptr() or b.lm_head.shape != lm_head.shape
                or b.block_size != hidden.shape[1] or b.max_bs < hidden.shape[0]):
            self._bound = None
            b = self._bound = self.bind(lm_head=lm_head, embed=embed, head=head,
                                        block_size=hidden.shape[1], max_bs=hidden.shape[0])
        b(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
          pure_prefix_len=pure_prefix_len, out=out)


# ---------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------

# the self-check problem: 3 requests, block 5, V=256; seed picked so that every greedy step of
# the spec has a top-1/top-2 logit gap > 0.05 (tests/sglang_plugin/test_head_seam.py checks it),
# so the check is immune to bf16 rounding of the GI table and of the base logits.
_CHECK_DIMS = dict(bs=3, block=5, d=64, g=32, r=16, v=256)
_CHECK_SEED = 2
_CHECK_CASES = ((True, True, 1), (True, False, 0), (False, True, 0))  # head?, shift, pure


def _check_problem(dtype: torch.dtype, seed: int = _CHECK_SEED):
    """CPU tensors rounded to ``dtype``: hidden, bonus, lm_head, embed, head."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    c = _CHECK_DIMS

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    g, d, v = c["g"], c["d"], c["v"]
    head = HeadWeights(rnd(3 * g, d, scale=0.2), rnd(3 * g, g, scale=0.2),
                       rnd(c["r"], d + g, scale=0.2), rnd(v, c["r"], scale=0.5))
    hidden, lm_head, embed = rnd(c["bs"], c["block"], d), rnd(v, d, scale=0.3), rnd(v, d)
    bonus = torch.randint(0, v, (c["bs"],), generator=gen)
    return hidden, bonus, lm_head, embed, head


def self_check(fn: HeadFn, device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Run ``fn`` on the tiny check problem on ``device`` in ``dtype`` (with and without a head,
    both label shifts); None if every proposal equals the spec's (CPU, fp32 math on the same
    dtype-rounded tensors), else what went wrong. The batch of 3 and then batch 1."""
    device = torch.device(device)
    hidden, bonus, lm_head, embed, head = _check_problem(dtype)
    dev = lambda t: t.to(device)  # noqa: E731
    dhead = HeadWeights(*(dev(w) for w in (head.w_ih, head.w_hh, head.w1, head.w2)))
    args = (dev(hidden), dev(bonus), dev(lm_head), dev(embed))
    problem = _check_on(fn, device, hidden, bonus, lm_head, embed, head, dhead, args)
    if problem is None:  # batch 1 too: DOMINO_HEAD_VARIANT=auto runs another kernel there
        problem = _check_on(fn, device, hidden[:1], bonus[:1], lm_head, embed, head, dhead,
                            (args[0][:1], args[1][:1]) + args[2:])
    return problem


def _check_on(fn, device, hidden, bonus, lm_head, embed, head, dhead, args) -> str | None:
    from domino_sglang.core import domino_rollout_ref

    bs, block = hidden.shape[:2]
    for with_head, shift, pure in _CHECK_CASES:
        want = domino_rollout_ref(hidden, bonus, lm_head, embed, head if with_head else None,
                                  shift_label=shift, pure_prefix_len=pure).tokens
        got = torch.full((bs, block - 1), -1, dtype=torch.long, device=device)
        try:
            fn(*args, dhead if with_head else None, shift_label=shift, pure_prefix_len=pure,
               out=got)
        except Exception as exc:  # an incompatible seam signature or a kernel failure
            return f"{type(exc).__name__}: {exc}"
        if not torch.equal(want, got.cpu()):
            return (f"proposals differ from the spec (head={with_head}, shift_label={shift}): "
                    f"{got.cpu().tolist()} vs {want.tolist()}")
    return None


def _make_triton(opts: HeadOptions) -> TritonHeadImpl:
    import domino_sglang.kernels.domino_head  # noqa: F401  (import errors surface here)

    return TritonHeadImpl(gi_table=opts.gi_table, base_logits=opts.base_logits,
                          variant=opts.variant)


def resolve_head_impl(device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32,
                      env=None, tp_size: int = 1, *,
                      options: HeadOptions | None = None) -> tuple[str, HeadFn]:
    """Pick the head implementation once (before graph capture): ``(name, fn)``.

    The switches come from ``options`` (the serving worker passes its serve configuration's
    ``head``), else are parsed from the mapping ``env`` (tests), else are the defaults: this
    function never reads the process environment (``options.read_developer_switches`` does,
    once, in the launcher).

    ``DOMINO_HEAD_IMPL``: ``torch`` -> the PyTorch head; ``triton`` -> the Triton head, a
    ``ValueError`` if it does not import or fails :func:`self_check` on ``device``/``dtype``;
    ``auto`` -> the Triton head on CUDA if it passes, else (CPU, or a failed check, logged as a
    warning) the PyTorch head. The choice is logged.

    ``tp_size`` >= 2: the Triton head is TP=1 only, so ``auto`` and ``torch`` give
    ``("torch", torch_domino_head)`` (the caller runs it sharded, :class:`TorchDominoHeadTP`)
    and ``triton`` is a ``ValueError``; no self-check runs."""
    opts = options if options is not None else parse_head_options({} if env is None else env)
    device = torch.device(device)
    if tp_size > 1:
        if opts.impl == "triton":
            raise ValueError(f"DOMINO_HEAD_IMPL=triton: the fused Triton head runs at --tp-size 1 "
                             f"only; with --tp-size {tp_size} unset DOMINO_HEAD_IMPL (auto) or "
                             "set it to torch (the PyTorch head over the vocabulary shard)")
        logger.info("Domino head implementation: torch over vocabulary shards (DOMINO_HEAD_IMPL"
                    "=%s, --tp-size %d)", opts.impl, tp_size)
        return "torch", torch_domino_head
    if opts.impl == "torch" or (opts.impl == "auto" and device.type != "cuda"):
        why = "DOMINO_HEAD_IMPL=torch" if opts.impl == "torch" else f"auto on {device.type}"
        logger.info("Domino head implementation: torch (%s)", why)
        return "torch", torch_domino_head
    forced = opts.impl == "triton"
    try:
        fn = _make_triton(opts)
    except Exception as exc:  # triton or the kernel module missing / broken
        problem = f"domino_sglang.kernels.domino_head is not importable ({exc})"
    else:
        problem = self_check(fn, device, dtype)
        fn._bound = None  # drop the check's small bound instance
        if problem is None:
            logger.info("Domino head implementation: triton (DOMINO_HEAD_IMPL=%s, gi table %s, "
                        "base logits %s, variant %s; self-check passed on %s/%s)", opts.impl,
                        opts.gi_table, opts.base_logits, opts.variant, device, dtype)
            return "triton", fn
        problem = f"the Triton head failed its self-check ({problem})"
    if forced:
        raise ValueError(f"DOMINO_HEAD_IMPL=triton: {problem}")
    logger.warning("Domino head implementation: torch (auto: %s)", problem)
    return "torch", torch_domino_head


class DominoDraftSampler:
    """Capture-safe greedy Domino head (drop-in for SGLang's ``_DflashDraftSampler``). At TP >= 2
    ``lm_head``, ``embed`` and ``head.w2`` are this rank's vocabulary shards and ``head_fn`` is a
    :class:`TorchDominoHeadTP`.

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
        head_fn = head_fn or torch_domino_head
        if hasattr(head_fn, "bind"):  # the Triton head: prepare weights + static buffers now
            head_fn = head_fn.bind(lm_head=lm_head, embed=embed, head=head,
                                   block_size=self.block_size, max_bs=self.max_bs)
        self.head_fn = head_fn
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
