"""Batch-adaptive verify width for the chain worker (issue #14): the SGLang side.

The policy (``core.adaptive.WidthPolicy``) picks a width ``w`` per decode round; this module
gives the worker what a round at width ``w`` needs, without a host synchronisation:

* :class:`RoundMeter`: the measured cost and acceptance of each round: the host time from one
  decode round's start to the next (the scheduler's per-round work included), and the commit
  lengths copied to pinned host memory behind a CUDA event, read once it has completed
  (``event.query()``, never a wait).
* :func:`build_verify_states`: one target-verify state per extra width, as SGLang 0.5.17's
  adaptive EAGLE builds them (``eagle_worker_v2.build_adaptive_runtime_state``): a target
  attention backend with its own workspace and a ``DecodeCudaGraphRunner`` captured for
  ``w`` tokens per request, under a context override of ``speculative_num_draft_tokens``.
  :func:`verify_state` swaps one in around the verify (``can_run_graph`` checks the request
  width, so a width without a state falls back to the eager verify, never to a wrong graph).
* :func:`narrow_round`: one decode round verifying ``w < B`` tokens: the draft block is drafted
  whole (the draft CUDA graph with the Domino head, as a full round; skipped at ``w = 1``), the
  target verifies ``[bonus, d_1 .. d_{w-1}]``, greedy or sampled accept as DFlash's (any width
  is lossless: verification of a shorter prefix), the draft KV gets the committed rows, and the
  result's stride is ``w``. Rounds with sampled drafts (``DOMINO_SAMPLED_DRAFTS``) run here at
  every width, the full block included: the drafts' q goes to the sampled verify.
* :func:`verify_forward`: the target verify of ``w`` tokens per request, shared with the tree
  worker.

It imports SGLang at import time (the worker does too); the policy itself is SGLang-free.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import torch
from sglang.kernels.ops.speculative.dflash import _compute_dflash_accept_bonus_triton_unchecked
from sglang.srt.managers.scheduler import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
from sglang.srt.speculative import dflash_worker_v2 as dw
from sglang.srt.speculative.dflash_info import DFlashVerifyInput
from sglang.srt.speculative.dflash_utils import (apply_dflash_verify_logits_adjustments,
                                                  compute_dflash_correct_drafts_and_bonus)

from ..core.adaptive import WidthPolicy, WidthSlot

logger = logging.getLogger(__name__)


def policy_from_config(cfg) -> WidthPolicy | None:
    """The width policy of a serve configuration (None: adaptive off)."""
    ad = cfg.adaptive
    if ad is None or not ad.enabled:
        return None
    slots = tuple(WidthSlot(s.batch_size, tuple(sorted({st + 1 for st in s.candidate_steps})))
                  for s in ad.slots)
    return WidthPolicy(cfg.block_size, slots, update_interval=ad.slots[0].update_interval)


# ---- measurement ---------------------------------------------------------------------------
@dataclass
class _Slot:
    end: object
    lens: torch.Tensor
    width: int = 0
    bs: int = 0
    busy: bool = False


class RoundMeter:
    """Round cost and per-request commit lengths for ``policy``, without a host
    synchronisation.

    Cost: the host time from one decode round's start to the next one's, charged to the first
    round's width and batch size: what the server really spends per round, the scheduler's own
    per-round work included (GPU-bound, the host waits on the GPU inside that interval; host-
    bound, it is the host). An interval with a prefill, idle or any other round in it is not
    counted (:meth:`interrupt`); a round whose previous decode round ran another width is
    passed as not steady (it pays for the switch; the policy counts steady rounds only).
    Acceptance: each round's commit lengths are copied to pinned memory behind a CUDA event
    and read once the event has completed (``event.query()``, never a wait); on a CPU device
    at once. Width-1 rounds verify no draft: no copy, no event.
    """

    def __init__(self, policy: WidthPolicy, device, max_bs: int, depth: int = 8,
                 clock=time.perf_counter, trace: str | None = None):
        self.policy = policy
        self._trace = RoundTrace(trace) if trace else None
        self._last_fwd: float | None = None
        self._since_switch = -1  # rounds at the current width since the last switch (0: it)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.clock = clock
        self._slots = []
        for _ in range(depth):
            if self.cuda:
                end = torch.cuda.Event()
                lens = torch.empty((max_bs,), dtype=torch.int32, pin_memory=True)
            else:
                end, lens = None, torch.empty((max_bs,), dtype=torch.int32)
            self._slots.append(_Slot(end, lens))
        self._open: _Slot | None = None
        self._last: tuple[int, int, float] | None = None  # (bs, width, start) of the last round
        self._steady = True  # the last round ran the width of the decode round before it
        self._prev_width: int | None = None

    def interrupt(self) -> None:
        """A non-decode forward ran: the running interval is not a decode round's cost."""
        if self._trace is not None and self._last is not None:
            self._trace.add({"t": round(self.clock(), 6), "interrupt": True})
        self._last = None

    def begin(self, bs: int, width: int) -> None:
        """At the start of a decode round: closes the previous round's interval (fed to the
        policy) and opens a commit-length slot (none free: the round's acceptance is not
        read)."""
        now = self.clock()
        if self._last is not None:
            pbs, pw, t0 = self._last
            self.policy.observe_cost(pbs, pw, (now - t0) * 1e3, self._steady)
            if self._trace is not None:
                self._trace.add({"t": round(t0, 6), "bs": pbs, "w": pw,
                                 "ms": round((now - t0) * 1e3, 4),
                                 "fwd_ms": None if self._last_fwd is None
                                 else round(self._last_fwd, 4),
                                 "steady": self._steady, "run": self._since_switch})
        self._steady = self._prev_width is None or self._prev_width == int(width)
        self._since_switch = self._since_switch + 1 if self._steady else 0
        self._prev_width = int(width)
        self._last_fwd = None
        self._last = (int(bs), int(width), now)
        self._open = None
        if width <= 1 or bs > int(self._slots[0].lens.shape[0]):
            return
        for s in self._slots:
            if not s.busy:
                s.busy, s.width, s.bs = True, int(width), int(bs)
                self._open = s
                return

    def end(self, commit_lens: torch.Tensor | None) -> None:
        """After the round's last launch, with its ``[bs]`` commit lengths (accepted + 1)."""
        if self._last is not None:  # the forward's own host time
            bs, width, t0 = self._last
            self._last_fwd = (self.clock() - t0) * 1e3
            self.policy.observe_forward(bs, width, self._last_fwd, self._steady)
        s, self._open = self._open, None
        if s is None:
            return
        if commit_lens is None or int(commit_lens.shape[0]) != s.bs:
            s.busy = False
            return
        s.lens[: s.bs].copy_(commit_lens.to(torch.int32), non_blocking=self.cuda)
        if self.cuda:
            s.end.record()

    def drain(self) -> int:
        """Feed the acceptance of every round whose commit lengths have arrived."""
        n = 0
        for s in self._slots:
            if not s.busy or s is self._open:
                continue
            if self.cuda and not s.end.query():
                continue
            lens = s.lens[: s.bs].tolist()
            s.busy = False
            self.policy.observe_accept(s.width, [x - 1 for x in lens])
            n += 1
        return n


class RoundTrace:
    """``DOMINO_ADAPTIVE_TRACE``: one JSON line per closed decode-round interval (``t`` its
    start on the meter's clock, ``bs``, width ``w``, period ``ms``, the worker's forward
    ``fwd_ms``, ``steady``, ``run``: rounds at this width since the last switch, 0 = the
    switch round) or ``{"interrupt": true}`` where a non-decode forward cut an interval.
    Buffered; written every ``flush_every`` records or ``flush_s`` seconds (a server killed
    without an orderly exit loses at most that) and at interpreter exit."""

    def __init__(self, path: str, flush_every: int = 512, flush_s: float = 2.0):
        import atexit

        self.path, self.flush_every, self.flush_s = str(path), int(flush_every), float(flush_s)
        self._buf, self._flushed = [], time.monotonic()
        with open(self.path, "a"):  # fail at start-up, not mid-serving, on a bad path
            pass
        atexit.register(self.flush)

    def add(self, rec: dict) -> None:
        self._buf.append(rec)
        if len(self._buf) >= self.flush_every or \
                time.monotonic() - self._flushed >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        import json

        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in self._buf))
        self._buf, self._flushed = [], time.monotonic()


# ---- per-width target verify states --------------------------------------------------------
@dataclass
class VerifyState:
    attn_backend: object
    graph_runner: object


def build_verify_states(worker, widths) -> dict[int, VerifyState]:
    """Target attention backend + verify CUDA graphs per width (the full block keeps the
    target's own). Mirrors SGLang 0.5.17's EAGLE adaptive runtime states."""
    from sglang.srt.model_executor.runner import DecodeCudaGraphRunner
    from sglang.srt.runtime_context import get_context, get_spec

    mr = worker.target_worker.model_runner
    ctx = get_context()
    saved = int(get_spec().speculative_num_draft_tokens)
    states = {}
    for w in sorted(set(int(x) for x in widths)):
        if w == saved:
            continue
        tic = time.perf_counter()
        ctx.override("domino_adaptive.capture_override", speculative_num_draft_tokens=w)
        backup_init = mr.init_new_workspace
        try:
            backend = mr._get_attention_backend(init_new_workspace=True)
            runner = DecodeCudaGraphRunner(mr, attn_backend=backend,
                                           speculative_num_draft_tokens=w)
        finally:
            mr.init_new_workspace = backup_init
            ctx.override("domino_adaptive.capture_restore", speculative_num_draft_tokens=saved)
        states[w] = VerifyState(backend, runner)
        if worker.ps.tp_rank == 0:
            logger.info("Domino adaptive: target verify graphs for width %d captured in %.1f s",
                        w, time.perf_counter() - tic)
    return states


@contextlib.contextmanager
def verify_state(worker, width: int):
    """The width's target attention backend and verify graphs for the duration of a verify."""
    st = (worker._domino_verify_states or {}).get(int(width))
    if st is None:
        yield
        return
    mr = worker.target_worker.model_runner
    old = (mr.attn_backend, mr.decode_cuda_graph_runner)
    mr.attn_backend, mr.decode_cuda_graph_runner = st.attn_backend, st.graph_runner
    try:
        yield
    finally:
        mr.attn_backend, mr.decode_cuda_graph_runner = old


def verify_forward(worker, batch, verify_input, width: int):
    """The target verify of ``width`` tokens per request (``verify_input``: a
    ``DFlashVerifyInput``, ``batch.out_cache_loc`` already set): the host bound of the sequence
    lengths is the committed prefix + ``width`` while the forward batch is prepared (restored
    after), then the target forward (its verify graph when it can). Returns the target's
    output. Shared by the narrow round and the tree worker."""
    draft_input = batch.spec_info
    cpu_backup, sum_backup = batch.seq_lens_cpu, batch.seq_lens_sum
    if cpu_backup is not None:
        batch.seq_lens_cpu = cpu_backup + width
        batch.seq_lens_sum = int(batch.seq_lens_cpu.sum())
    elif draft_input.reserved_seq_lens_cpu is not None:
        batch.seq_lens_cpu = draft_input.reserved_seq_lens_cpu
        batch.seq_lens_sum = int(draft_input.reserved_seq_lens_sum)
    try:
        verify_fb, _ = verify_input.prepare_for_verify(batch, worker.target_worker)
    finally:
        batch.seq_lens_cpu, batch.seq_lens_sum = cpu_backup, sum_backup
    return worker.target_worker.forward_batch_generation(
        batch=None, forward_batch=verify_fb, is_verify=True, skip_attn_backend_init=True)


def _commit_and_tokens(accept_len, bonus, draft_tokens):
    """Commit lengths and the ``[bs, w]`` out tokens (accepted drafts, the bonus at
    ``accept_len``, zeros after) of a non-kernel accept."""
    bs, w = draft_tokens.shape
    commit_lens = accept_len.to(torch.int32) + 1
    out_tokens = torch.zeros((bs, w), dtype=torch.int64, device=draft_tokens.device)
    if w > 1:
        out_tokens[:, : w - 1].copy_(draft_tokens[:, 1:])
    out_tokens.scatter_(1, accept_len.to(torch.int64)[:, None], bonus.to(torch.int64)[:, None])
    return commit_lens, out_tokens


# ---- a round at width w < B ----------------------------------------------------------------
def narrow_round(worker, batch, width: int, on_publish=None, grammar_barrier=None):
    """One decode round verifying ``width`` (< B) tokens per request; see the module doc."""
    w = int(width)
    draft_input = batch.spec_info
    if batch.seq_lens.is_cuda:  # carried over from the previous overlap iteration
        batch.seq_lens.record_stream(torch.cuda.current_stream())
    bs = len(batch.seq_lens)
    prefix = batch.seq_lens

    if w > 1:
        block_ids, positions_2d, loc_2d, draft_next = worker._domino_draft_block(batch)
        draft_tokens = torch.cat([block_ids[:, :1], draft_next[:, : w - 1]], dim=1)
        positions_w = positions_2d[:, :w].contiguous()
        loc_w = loc_2d[:, :w].contiguous()
    else:  # no speculation: the bonus alone, no draft forward
        draft_tokens = draft_input.bonus_tokens.view(bs, 1).to(torch.long)
        positions_w = prefix.to(torch.int64).view(bs, 1).clone()
        req_to_token = worker.model_runner.req_to_token_pool.req_to_token
        loc_w = req_to_token[batch.req_pool_indices.to(torch.int64),
                             prefix.to(torch.int64)].to(torch.int64).view(bs, 1)

    grammar_tree = dw.GrammarTree.from_linear_chain(draft_tokens) if batch.has_grammar else None

    verify_input = DFlashVerifyInput(
        draft_token=draft_tokens.reshape(-1), positions=positions_w.reshape(-1),
        draft_token_num=w, custom_mask=None, capture_hidden_mode=CaptureHiddenMode.FULL)
    batch.out_cache_loc = loc_w.reshape(-1)
    sampling_info = batch.sampling_info
    with verify_state(worker, w):
        target_out = verify_forward(worker, batch, verify_input, w)
    logits_output = target_out.logits_output

    grammar_mask = None
    if batch.has_grammar:
        grammar_mask = dw.build_grammar_vocab_mask(
            reqs=batch.reqs, tree=grammar_tree, sampling_info=batch.sampling_info,
            device=logits_output.next_token_logits.device, barrier=grammar_barrier)
    if sampling_info is not None:
        apply_dflash_verify_logits_adjustments(
            next_token_logits=logits_output.next_token_logits, sampling_info=sampling_info,
            draft_token_num=w)
    if grammar_mask is not None:
        grammar_mask.apply(logits_output.next_token_logits)

    draft_q, worker._domino_draft_q = getattr(worker, "_domino_draft_q", None), None
    if (sampling_info is not None and not sampling_info.is_all_greedy
            and dw.is_dflash_sampling_verify_available()):
        # looked up on the module: the plugin's sampled verify hook replaces it there; the
        # drafts' q (DOMINO_SAMPLED_DRAFTS, only with that hook) goes with them
        extra = {} if draft_q is None or w <= 1 else {"draft_probs": draft_q[:, : w - 1]}
        accept_len, bonus = dw.compute_dflash_sampling_correct_drafts_and_bonus(
            candidates=draft_tokens, next_token_logits=logits_output.next_token_logits,
            sampling_info=sampling_info, max_top_k=draft_input.max_top_k,
            uniform_top_k_value=draft_input.uniform_top_k_value, **extra)
        commit_lens, out_tokens = _commit_and_tokens(accept_len, bonus, draft_tokens)
        new_seq_lens = prefix + commit_lens.to(prefix.dtype)
    else:
        target_predict = torch.argmax(logits_output.next_token_logits, dim=-1).view(bs, w)
        if getattr(worker, "_use_triton_accept_bonus", False):
            # SGLang's one-kernel greedy accept (any width), into the worker's double-buffered
            # accept buffers as DFlash's own round uses them (the scheduler may still read the
            # previous round's); out tokens as a contiguous [bs, w] view of the [bs, B] buffer
            accept_len, commit_lens, bonus, out_buf, new_seq_lens = \
                worker._next_accept_bonus_buffers(bs)
            out_tokens = out_buf.reshape(-1)[: bs * w].view(bs, w)
            _compute_dflash_accept_bonus_triton_unchecked(
                candidates=draft_tokens, target_top1=target_predict.contiguous(),
                accept_lens_out=accept_len, commit_lens_out=commit_lens, bonus_ids_out=bonus,
                out_tokens_out=out_tokens, prefix_lens=prefix, new_seq_lens_out=new_seq_lens)
            new_seq_lens = new_seq_lens.to(prefix.dtype)
        else:
            accept_len, bonus = compute_dflash_correct_drafts_and_bonus(
                candidates=draft_tokens, target_predict=target_predict)
            commit_lens, out_tokens = _commit_and_tokens(accept_len, bonus, draft_tokens)
            new_seq_lens = prefix + commit_lens.to(prefix.dtype)

    if on_publish is not None:
        on_publish(new_seq_lens)

    hidden = logits_output.hidden_states
    if hidden is None:
        raise RuntimeError("domino: the target verify returned no hidden states")
    worker._append_target_hidden_to_draft_kv_by_loc(
        target_hidden=hidden.view(bs * w, -1), cache_loc=loc_w.reshape(-1),
        cache_loc_2d=loc_w, positions=positions_w.reshape(-1), commit_lens=commit_lens)
    logits_output.hidden_states = None
    return GenerationBatchResult(
        logits_output=logits_output, next_token_ids=out_tokens.reshape(-1),
        accept_lens=commit_lens, can_run_cuda_graph=target_out.can_run_cuda_graph,
        next_draft_input=worker._make_next_draft_input_decode(bonus_tokens=bonus,
                                                              new_seq_lens=new_seq_lens),
        speculative_num_draft_tokens=w, new_seq_lens=new_seq_lens)


__all__ = ["RoundMeter", "RoundTrace", "VerifyState", "build_verify_states", "narrow_round",
           "policy_from_config", "verify_forward", "verify_state"]
