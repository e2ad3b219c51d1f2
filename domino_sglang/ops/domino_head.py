"""The Domino head rollout over one draft block (greedy and sampled): the one draft-head op.

``domino_head_ref`` is ``core.rollout.domino_rollout_ref``. :class:`PreparedDominoHead` runs the
same contract through the fused Triton kernels (``kernels.domino_head_fast.domino_head_launch``)
on prepared weights (:func:`prepared_weights`), a static workspace per batch size (CUDA-graph
capturable) and the plan of :func:`pick_variant`; the Transformers backend calls it, and so does
SGLang's seam (``sglang_plugin.head.TritonDominoHead``, :meth:`PreparedDominoHead.propose`).
``domino_head`` prepares per call.
"""

from __future__ import annotations

import logging

import torch

from ..core.drafter import HeadWeights
from ..core.rollout import RolloutResult, domino_rollout_ref, proposal_hidden
from ..core.sampling import SamplingParams
from . import resolve_impl

logger = logging.getLogger(__name__)


def domino_head_ref(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                    pure_prefix_len: int, sampling: SamplingParams | None = None,
                    uniforms=None) -> RolloutResult:
    """hidden [B, K, D], bonus [B], lm_head/embed [V, D] -> tokens [B, K-1], logits and (sampled)
    draft probs [B, K-1, V]. See ``core.rollout.domino_rollout_ref``."""
    return domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                              pure_prefix_len=pure_prefix_len, sampling=sampling,
                              uniforms=uniforms)


def base_logits_fp32(z: torch.Tensor, lm_head: torch.Tensor,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """z [..., D] @ lm_head [V, D]^T as fp32 [..., V] with the spec's numerics (fp32 products
    and accumulation). When z and lm_head share a bf16/fp16 dtype on CUDA: one GEMM with fp32
    accumulation and output (the products of two bf16 values are exact in fp32), without the
    fp32 copy of the LM head (2.5 GB at Qwen3-8B) that the fp32 fallback makes. ``out``: an
    fp32 [rows, V] buffer to write into (rows = z's leading elements), e.g. a static buffer
    before a CUDA-graph capture; returned reshaped."""
    shape = (*z.shape[:-1], lm_head.shape[0])
    if z.dtype == lm_head.dtype != torch.float32 and lm_head.device.type == "cuda":
        z2 = z.reshape(-1, z.shape[-1])
        try:
            if out is None:
                return torch.mm(z2, lm_head.t(), out_dtype=torch.float32).view(shape)
            torch.mm(z2, lm_head.t(), out_dtype=torch.float32, out=out)
            return out.view(shape)
        except (TypeError, RuntimeError) as exc:  # a torch without mm(out_dtype=...)
            logger.debug("fp32-output GEMM unavailable (%s): fp32 operands", exc)
    res = z.float() @ lm_head.float().t()
    if out is None:
        return res
    out.copy_(res.reshape(out.shape))
    return out.view(shape)


GI_TABLE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "none": None}
BASE_LOGITS = ("fp32", "model")


def gi_table(embed: torch.Tensor, w_ih: torch.Tensor, dtype: torch.dtype,
             chunk: int = 8192) -> torch.Tensor:
    """E_ih = embed @ W_ih^T [V, 3G] in ``dtype``: fp32 GEMMs over row chunks (no transient fp32
    copy of the whole embedding, 2.5 GB at Qwen3-8B)."""
    w = w_ih.float()
    table = torch.empty(embed.shape[0], w.shape[0], dtype=dtype, device=embed.device)
    for r0 in range(0, embed.shape[0], chunk):
        table[r0:r0 + chunk] = (embed[r0:r0 + chunk].float() @ w.t()).to(dtype)
    return table


def _gi_dtype(gi_table_dtype):
    """A dtype, None, or a name of :data:`GI_TABLE_DTYPES` -> a dtype or None."""
    if not isinstance(gi_table_dtype, str):
        return gi_table_dtype
    if gi_table_dtype not in GI_TABLE_DTYPES:
        raise ValueError(f"gi_table_dtype={gi_table_dtype!r}: expected one of "
                         f"{', '.join(GI_TABLE_DTYPES)}")
    return GI_TABLE_DTYPES[gi_table_dtype]


_PREPARED: list = []  # [(key, sources, HeadKernelWeights)]: the most recent preparation


def prepared_weights(head: HeadWeights, embed: torch.Tensor, gi_table_dtype):
    """``kernels.domino_head.prepare_head`` with the GRU input table built by :func:`gi_table`,
    shared by every head prepared from the same tensors (SGLang's worker prepares one head for
    the draft graphs and one for its eager path: one table, not two). The cache holds the source
    tensors, so a matching address is the same live memory."""
    from domino_sglang.kernels.domino_head import prepare_head

    dtype = _gi_dtype(gi_table_dtype)
    srcs = (head.w_ih, head.w_hh, head.w1, head.w2, embed)
    key = (dtype,) + tuple((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device)
                           for t in srcs)
    if _PREPARED and _PREPARED[0][0] == key:
        return _PREPARED[0][2]
    _PREPARED.clear()
    weights = prepare_head(head, embed, gi_table_dtype=None)
    if dtype is not None:
        weights.gi_table = gi_table(embed, head.w_ih, dtype)
    _PREPARED.append((key, srcs, weights))
    return weights


def fp32_gemm_problem(lm_head: torch.Tensor) -> str | None:
    """None if ``mm(x, lm_head^T, out_dtype=float32)`` (fp32 accumulation and output from
    bf16/fp16 operands) runs here (CUDA only in torch 2.13), else why not."""
    if lm_head.device.type != "cuda":
        return f"needs CUDA, not {lm_head.device.type}"
    try:
        x = torch.zeros(2, lm_head.shape[1], dtype=lm_head.dtype, device=lm_head.device)
        o = torch.empty(2, 8, dtype=torch.float32, device=lm_head.device)
        torch.mm(x, lm_head[:8].t(), out_dtype=torch.float32, out=o)
    except Exception as exc:  # an older torch, or no kernel for this dtype
        return f"{type(exc).__name__}: {exc}"
    return None


def _capturing(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


class HeadBuffers:
    """Everything one rollout of up to ``rows`` requests touches (allocated once): the kernel
    workspace, and with a static base-logits dtype the base-logits buffer [rows * B, V]."""

    def __init__(self, rows: int, op: "PreparedDominoHead"):
        from domino_sglang.kernels.domino_head import DominoHeadWorkspace

        self.rows = rows
        self.ws = DominoHeadWorkspace(rows, op.block_size, op.vocab, op.rank, op.gru, op.device,
                                      enable_sampling=op.enable_sampling)
        self.base = (None if op.base_dtype is None else
                     torch.empty(rows * op.block_size, op.vocab, dtype=op.base_dtype,
                                 device=op.device))
        self.cast: torch.Tensor | None = None  # hidden cast to the lm_head dtype, if needed

    def tensors(self) -> list[torch.Tensor]:
        ws = self.ws
        t = [self.base, self.cast, ws.a_h, ws.act, ws.state, ws.part_val, ws.part_idx,
             ws.tokens, ws.gh, ws.logits, ws.probs]
        return [x for x in t if x is not None]


class PreparedDominoHead:
    """The Triton rollout of :func:`domino_head_ref` with the head's weights prepared once
    (:func:`prepared_weights`: W1 split, the GRU input table E_ih) and one static workspace for
    up to ``max_batch`` requests, so that repeated rollouts pay no preparation. The one draft-head
    op: the Transformers backend calls it (``__call__``), SGLang's seam
    (``sglang_plugin.head.TritonDominoHead``) calls :meth:`propose`. ``head=None`` is a plain
    DFlash drafter (one argmax per block, greedy).

    gi_table_dtype: the E_ih table's dtype (or "fp32" / "bf16" / "none"); None reads W_ih every
    step. variant: a ``kernels.domino_head_fast`` launch variant for greedy rollouts with a head,
    or ``"auto"`` (:func:`pick_variant`). base_logits: None computes the base logits per call
    (:func:`base_logits_fp32`, ``__call__`` only); "fp32" / "model" preallocate them in the
    workspace (:meth:`propose`): fp32 (the spec's numerics; a bf16/fp16 lm_head needs the
    fp32-output GEMM, CUDA only, else the lm_head dtype is used and logged) or the lm_head
    dtype. Greedy calls return tokens only (``logits`` None); sampled calls (``sampling`` +
    ``uniforms``) also return the draft probabilities q_i."""

    def __init__(self, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None, *,
                 block_size: int, max_batch: int = 1, gi_table_dtype=torch.float32,
                 variant: str = "auto", enable_sampling: bool = True,
                 base_logits: str | None = None):
        if block_size < 2 or max_batch < 1:
            raise ValueError(f"block_size={block_size}, max_batch={max_batch}: need >= 2 and >= 1")
        if base_logits is not None and base_logits not in BASE_LOGITS:
            raise ValueError(f"base_logits={base_logits!r}: expected one of "
                             f"{', '.join(BASE_LOGITS)} or None")
        if lm_head.stride(-1) != 1:
            raise ValueError("lm_head must have a unit last stride")
        self.vocab = int(lm_head.shape[0])
        if head is not None and int(head.w2.shape[0]) != self.vocab:
            raise ValueError(f"head vocabulary {head.w2.shape[0]} != lm_head vocabulary "
                             f"{self.vocab}")
        self.lm_head, self.embed, self.head = lm_head, embed, head
        self.block_size, self.max_batch = int(block_size), int(max_batch)
        self.variant, self.enable_sampling = variant, bool(enable_sampling)
        self.device = lm_head.device
        self.weights = (prepared_weights(head, embed, gi_table_dtype)
                        if head is not None else None)
        self.rank = self.weights.rank if self.weights is not None else 16
        self.gru = self.weights.gru_dim if self.weights is not None else 16
        self.base_dtype = None if base_logits is None else lm_head.dtype
        if base_logits == "fp32" and lm_head.dtype != torch.float32:
            problem = fp32_gemm_problem(lm_head)
            if problem is None:
                self.base_dtype = torch.float32
            else:
                (logger.warning if self.device.type == "cuda" else logger.info)(
                    "Domino head: base logits in %s (no fp32-output %s GEMM here: %s)",
                    lm_head.dtype, lm_head.dtype, problem)
        self.buffers = HeadBuffers(self.max_batch, self)
        self._overflow: HeadBuffers | None = None

    @property
    def ws(self):
        """The workspace of the static buffers (``max_batch`` rows)."""
        return self.buffers.ws

    def nbytes(self) -> int:
        """Device memory held by the GRU input table and the static buffers (not the overflow
        set, not the weights it reads)."""
        t = self.buffers.tensors()
        if self.weights is not None and self.weights.gi_table is not None:
            t.append(self.weights.gi_table)
        return sum(x.numel() * x.element_size() for x in t)

    def buffers_for(self, rows: int, like: torch.Tensor) -> HeadBuffers:
        """The static buffers for ``rows <= max_batch``; above that (eager calls only) a separate
        overflow set, grown to the next power of two and never touched by a captured graph."""
        if rows <= self.max_batch:
            return self.buffers
        if _capturing(like):
            raise RuntimeError(f"draft batch {rows} exceeds the head's max_batch="
                               f"{self.max_batch} inside a CUDA graph capture")
        if self._overflow is None or self._overflow.rows < rows:
            self._overflow = None
            self._overflow = HeadBuffers(1 << (rows - 1).bit_length(), self)
        return self._overflow

    def propose(self, hidden: torch.Tensor, bonus: torch.Tensor, *, shift_label: bool,
                pure_prefix_len: int, out: torch.Tensor) -> None:
        """Greedy proposals of ``hidden [bs, B, D]`` into ``out [bs, B-1]`` (int64), CUDA-graph
        capturable for ``bs <= max_batch``: ``mm(hidden, lm_head^T)`` into the static base
        buffer, ``domino_head_launch`` on the static workspace (no host sync, no allocation),
        ``out.copy_``. Needs ``base_logits`` "fp32" or "model"."""
        from domino_sglang.kernels.domino_head_fast import domino_head_launch

        if self.base_dtype is None:
            raise ValueError("propose() needs a head prepared with base_logits='fp32' or 'model'")
        bs, block, d = hidden.shape
        if block != self.block_size:
            raise ValueError(f"block {block} != the prepared block_size {self.block_size}")
        buf = self.buffers_for(bs, hidden)
        h2 = hidden.reshape(bs * block, d)
        if h2.dtype != self.lm_head.dtype:  # e.g. an fp16 draft on a bf16 target
            if buf.cast is None:
                buf.cast = torch.empty(buf.rows * block, d, dtype=self.lm_head.dtype,
                                       device=self.device)
            cast = buf.cast[: bs * block]
            cast.copy_(h2)
            h2 = cast
        base = buf.base[: bs * block]
        if base.dtype == h2.dtype:
            torch.matmul(h2, self.lm_head.t(), out=base)
        else:  # bf16/fp16 operands, fp32 accumulation and output (CUDA)
            torch.mm(h2, self.lm_head.t(), out_dtype=base.dtype, out=base)
        sl = slice(0, block - 1) if shift_label else slice(1, block)
        base3 = base.view(bs, block, self.vocab)[:, sl]
        if self.weights is None:  # plain DFlash drafter: no recurrence, one argmax for the block
            torch.argmax(base3, dim=-1, out=buf.ws.tokens[:bs])
            out.copy_(buf.ws.tokens[:bs])
            return
        tokens = domino_head_launch(h2.view(bs, block, d)[:, sl], base3, bonus, self.weights,
                                    buf.ws, pure_prefix_len=int(pure_prefix_len),
                                    variant=pick_variant(self.variant, bs, hidden.device))
        out.copy_(tokens)

    def __call__(self, hidden, bonus, *, shift_label: bool, pure_prefix_len: int,
                 sampling: SamplingParams | None = None, uniforms=None,
                 want_logits: bool = False) -> RolloutResult:
        from domino_sglang.kernels.domino_head_fast import domino_head_launch

        z = proposal_hidden(hidden, shift_label)
        b, k1, _ = z.shape
        if b > self.max_batch or k1 + 1 != self.block_size:
            raise ValueError(f"hidden {tuple(hidden.shape)}: this head was prepared for batch <= "
                             f"{self.max_batch} and block {self.block_size}")
        base = base_logits_fp32(z, self.lm_head)
        if self.weights is None and sampling is None and not want_logits:
            return RolloutResult(base.argmax(-1), None, None)
        logits = probs = None
        if want_logits:
            logits = torch.empty(b, k1, base.shape[-1], dtype=torch.float32, device=z.device)
        if sampling is not None:
            probs = torch.empty(b, k1, base.shape[-1], dtype=torch.float32, device=z.device)
            sampling = SamplingParams(sampling.temperature.to(z.device, torch.float32),
                                      sampling.top_k.to(z.device, torch.long),
                                      sampling.top_p.to(z.device, torch.float32))
            uniforms = uniforms.to(z.device, torch.float32)
        variant = "default" if sampling is not None or want_logits else pick_variant(
            self.variant, b, z.device)
        tokens = domino_head_launch(z, base, bonus, self.weights, self.ws,
                                    pure_prefix_len=pure_prefix_len, sampling=sampling,
                                    uniforms=uniforms, logits_out=logits, probs_out=probs,
                                    variant=variant)
        return RolloutResult(tokens.clone(), logits, probs)


def pick_variant(variant: str, batch: int, device=None) -> str:
    """The head's launch variant: ``auto`` = the fastest measured on the H200
    (``benchmarks/results/kernels_notes.md``): ``fused_pdl`` at batch 1 on sm_90+ (``fused``
    elsewhere), ``wide`` above (its ``_pdl`` form measured slower at batch 16 and 64)."""
    if variant != "auto":
        return variant
    if batch > 1:
        return "wide"
    from domino_sglang.kernels.domino_head_fast import pdl_supported

    return "fused_pdl" if device is not None and pdl_supported(torch.device(device)) else "fused"


def domino_head(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                pure_prefix_len: int, sampling: SamplingParams | None = None, uniforms=None,
                impl: str = "auto", gi_table_dtype=torch.float32,
                variant: str = "default") -> RolloutResult:
    """Same contract as :func:`domino_head_ref`; impl "auto" | "triton" | "ref".

    variant (Triton only): "default" | "wide" | "fused" | "fused_pdl" (see
    ``kernels.domino_head_fast``). The non-default variants return tokens only
    (``logits`` is None) for greedy rollouts with a head and a table; otherwise they are the
    default path.

    The Triton path prepares the head (E_ih = embed @ W_ih^T in ``gi_table_dtype``; None reads
    W_ih every step) and a workspace on each call: use :class:`PreparedDominoHead` to repeat."""
    if resolve_impl(impl, hidden.device) == "ref":
        return domino_head_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                               pure_prefix_len=pure_prefix_len, sampling=sampling,
                               uniforms=uniforms)
    fast = (variant != "default" and sampling is None and head is not None
            and gi_table_dtype is not None)
    prepared = PreparedDominoHead(lm_head, embed, head, block_size=hidden.shape[1],
                                  max_batch=hidden.shape[0], gi_table_dtype=gi_table_dtype,
                                  variant=variant, enable_sampling=sampling is not None)
    return prepared(hidden, bonus, shift_label=shift_label, pure_prefix_len=pure_prefix_len,
                    sampling=sampling, uniforms=uniforms, want_logits=not fast)
