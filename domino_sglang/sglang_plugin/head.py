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

* ``torch``: :func:`torch_domino_head`, plain PyTorch ops (matmuls in the weight dtype): the
  vocabulary-sharded rollout ``core.sharded.domino_rollout_sharded`` on one rank, with
  :data:`SERVING_MATH`.
* ``triton``: :class:`TritonHeadImpl`, the one draft-head op ``ops.domino_head.
  PreparedDominoHead`` (the fused kernels). The seam function has a ``bind(...)`` method;
  :class:`DominoDraftSampler` calls it once at build time, which prepares the weights (GRU input
  table, ``DOMINO_HEAD_GI_TABLE``) and preallocates the kernel workspace and the base-logits
  buffer [max_bs * B, V] (``DOMINO_HEAD_BASE_LOGITS``) for ``max_bs`` requests
  (:class:`TritonDominoHead`). Each call is then one lm_head GEMM into that buffer, the fused
  rollout, and a copy of the proposals into ``out``.
* ``auto`` (default): ``triton`` on CUDA when it passes :func:`self_check` (exact proposals vs
  ``domino_sglang.core.domino_rollout_ref`` on a tiny random problem, in the serving dtype),
  else ``torch``; ``triton`` forced and failing its check is a start-up error.

At ``--tp-size`` >= 2 the seam function is :class:`TorchDominoHeadTP` (the same sharded rollout
over this rank's vocabulary shards, one all-gather per proposal; docs/tp.md): ``auto`` and
``torch`` pick it, ``triton`` is a start-up error.

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
from ..core.sharded import (SINGLE_RANK, RolloutMath, check_layout, domino_rollout_sharded,
                            group_world_rank, shard_vocab_rows)
from ..ops.domino_head import PreparedDominoHead
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


def _logits(z: torch.Tensor, lm_head: torch.Tensor) -> torch.Tensor:
    return torch.matmul(z.to(lm_head.dtype), lm_head.t()).float()


# the serving numerics of the PyTorch heads: matmuls in the weight dtype, base logits per step
SERVING_MATH = RolloutMath(logits=_logits, gru=_gru_step, correction=_correction, per_step=True)


def _torch_rollout(hidden, bonus, lm_head, embed, head, *, group, shard_start: int,
                   vocab_size: int, shift_label: bool, pure_prefix_len: int,
                   out: torch.Tensor) -> None:
    res = domino_rollout_sharded(hidden, bonus, lm_head, embed, head, shard_start=shard_start,
                                 vocab_size=vocab_size, group=group, shift_label=shift_label,
                                 pure_prefix_len=int(pure_prefix_len), math=SERVING_MATH,
                                 keep_logits=False)
    out.copy_(res.tokens)


def torch_domino_head(hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                      embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                      pure_prefix_len: int, out: torch.Tensor) -> None:
    """Greedy Domino rollout over one block per request; writes ``out [bs, B-1]``: the sharded
    rollout (``core.sharded.domino_rollout_sharded``) on one rank holding the whole vocabulary,
    with :data:`SERVING_MATH`.

    Capture-safe: a Python loop over the B-1 positions (unrolled in the graph), fixed shapes,
    no ``.item()``, no data-dependent control flow. lm_head [V, D] must already be cut to the
    real vocabulary (no padding rows).
    """
    _torch_rollout(hidden, bonus, lm_head, embed, head, group=SINGLE_RANK, shard_start=0,
                   vocab_size=lm_head.shape[0], shift_label=shift_label,
                   pure_prefix_len=pure_prefix_len, out=out)


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

    Capture-safe like the TP=1 head (the same rollout, ``core.sharded.domino_rollout_sharded``
    with :data:`SERVING_MATH`): fixed shapes, no host sync, no ``.item()``, the gather buffers
    come from the capture's memory pool, and the all-gathers go through the coordinator's pynccl
    path (what SGLang's own DFLASH sampler records in the draft graph at TP > 1). Every rank
    must call it with the same batch.
    """

    def __init__(self, *, group, shard_start: int, vocab_shard: int, vocab_size: int):
        self.group = group
        self.world, self.rank = group_world_rank(group)
        self.shard_start, self.vp, self.vocab_size = map(int, (shard_start, vocab_shard,
                                                               vocab_size))
        check_layout(self.world, self.rank, self.vp, self.shard_start, self.vocab_size)

    def __call__(self, hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                 embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                 pure_prefix_len: int, out: torch.Tensor) -> None:
        if lm_head.shape[0] != self.vp or embed.shape[0] != self.vp or (
                head is not None and head.w2.shape[0] != self.vp):
            raise ValueError(f"the TP head expects this rank's {self.vp}-row vocabulary shard of "
                             f"lm_head / embed / W2, got {lm_head.shape[0]} / {embed.shape[0]} / "
                             f"{None if head is None else head.w2.shape[0]} rows")
        _torch_rollout(hidden, bonus, lm_head, embed, head, group=self.group,
                       shard_start=self.shard_start, vocab_size=self.vocab_size,
                       shift_label=shift_label, pure_prefix_len=pure_prefix_len, out=out)


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

class TritonDominoHead:
    """The seam adapter of the one draft-head op, ``ops.domino_head.PreparedDominoHead``, bound
    to one sampler: weights prepared (GRU input table ``gi_table``, shared with the other heads
    bound to the same tensors), static buffers for ``max_bs`` requests (base logits in
    ``base_logits``), launch variant from ``ops.domino_head.pick_variant``.

    Capture-safe for ``bs <= max_bs`` (``PreparedDominoHead.propose``). Eager calls with
    ``bs > max_bs`` (SGLang's eager draft path builds its sampler with ``max_bs=1``) use the
    op's separate overflow buffers, never touched by a captured graph; inside a capture
    ``bs > max_bs`` is an error.
    """

    def __init__(self, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None, *,
                 block_size: int, max_bs: int, gi_table: str = "fp32",
                 base_logits: str = "fp32", variant: str = "auto"):
        self.op = PreparedDominoHead(lm_head, embed, head, block_size=block_size,
                                     max_batch=max_bs, gi_table_dtype=gi_table, variant=variant,
                                     enable_sampling=False, base_logits=base_logits)
        self.lm_head, self.embed, self.head = lm_head, embed, head
        self.block_size, self.max_bs = self.op.block_size, self.op.max_batch
        logger.info("Domino Triton head bound: max_bs=%d block=%d V=%d, gi table %s, base "
                    "logits %s, %.1f MiB of device memory", self.max_bs, self.block_size,
                    self.op.vocab, gi_table, self.op.base_dtype, self.op.nbytes() / 2 ** 20)

    def __call__(self, hidden: torch.Tensor, bonus: torch.Tensor, lm_head: torch.Tensor,
                 embed: torch.Tensor, head: HeadWeights | None, *, shift_label: bool,
                 pure_prefix_len: int, out: torch.Tensor) -> None:
        if (head is not self.head or lm_head.data_ptr() != self.lm_head.data_ptr()
                or lm_head.shape != self.lm_head.shape):
            raise ValueError("the Triton head was bound to other lm_head/head weights")
        self.op.propose(hidden, bonus, shift_label=shift_label, pure_prefix_len=pure_prefix_len,
                        out=out)


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
