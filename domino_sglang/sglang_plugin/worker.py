"""``DominoWorkerV2``: SGLang 0.5.17's ``DFlashWorkerV2`` with the Domino head as proposer.

Only the proposal seam (and the draft state's host path, :mod:`.draft_input`) is overridden;
everything else (draft KV materialisation from target hidden states, block preparation, draft
CUDA graphs, chain verify greedy and sampled, accept / bonus, KV commit, overlap
``on_publish``, ``GenerationBatchResult``) is DFlash's.

* ``__init__``: loads the draft through :class:`DominoDraftModel` (swapped in for
  ``DFlashDraftModel`` only while the draft loads); takes the serve configuration
  (``DominoServeConfig``, resolved in the launcher) from ``server_args`` as
  ``self.domino_config``: head switches, eager sampler, widths. It reads no environment.
* ``_maybe_build_draft_sampler``: returns a :class:`DominoDraftSampler` (the head inside the
  draft CUDA graph), built on the target's ``lm_head`` and input embedding. At ``--tp-size``
  >= 2 (chain mode) it runs :class:`~.head.TorchDominoHeadTP` on this rank's vocabulary shards
  (lm_head, embedding, W2; GRU and W1 replicated) with one all-gather per proposal through
  SGLang's TP group, captured in the draft graph like DFLASH's own TP sampler (docs/tp.md).
* ``_greedy_sample_from_vocab_parallel_head``: the eager twin (batches above the largest
  captured size, graphs off, ``SGLANG_DFLASH_EAGER_DRAFT_SAMPLER=1``). SGLang passes only block
  positions 1..B-1 here, so the worker keeps the full draft output of the last draft forward
  (``_domino_last_hidden``, set by a thin wrapper of ``draft_model_runner.forward``) and takes the
  bonus from ``_draft_block_ids_buf[:bs, 0]``.

Sampled requests (temperature > 0) are verified by ``sampled_verify.domino_sampled_accept``
(hooked in place of DFlash's ``compute_dflash_sampling_correct_drafts_and_bonus`` by the
factory; serve config ``sampled_verify="domino"``, the default) or DFlash's own target-only
sampled verify: both lossless, because the Domino drafts are point masses. With
``DOMINO_SAMPLED_DRAFTS=1`` a round with a sampled request drafts from the head's distribution
instead (``sampled_draft.SampledDrafter`` on the draft's hidden states, in
``_domino_draft_block``) and runs through ``adaptive.narrow_round`` at any width, which passes
the drafts' q to the verify. Simulated acceptance
(``SGLANG_SIMULATE_ACC_LEN``, benchmarks only) is DFlash's override after either accept
(``dflash_worker_v2.py:1810``); the factory checks it matches the serve configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging

import torch

from sglang.kernels.ops.speculative.cache_locs import assign_extend_cache_locs_func
from sglang.kernels.ops.speculative.dflash import _prepare_dflash_draft_block_unchecked
from sglang.srt.distributed import get_tp_group
from sglang.srt.model_executor.cuda_graph_config import Backend
from sglang.srt.model_executor.forward_batch_info import (CaptureHiddenMode, ForwardBatch,
                                                          ForwardMode)
from sglang.srt.runtime_context import get_exec
from sglang.srt.speculative.dflash_worker_v2 import DFlashWorkerV2
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

from . import adaptive, sampled_draft
from .draft_input import DominoDraftInputV2
from .draft_model import DominoDraftModel
from .head import DominoDraftSampler, TorchDominoHeadTP, resolve_head_impl, vocab_shard_layout
from .serve_config import DominoServeConfig, serve_config_of

logger = logging.getLogger(__name__)
SUMMARY_EVERY = 256  # decode rounds between the adaptive policy's summary log lines


@contextlib.contextmanager
def _draft_model_class_swapped():
    """Resolve the draft architecture ``DFlashDraftModel`` to :class:`DominoDraftModel` while
    the draft model loads (the target is already loaded by then), then restore the registry."""
    from sglang.srt.models.registry import ModelRegistry

    old = ModelRegistry.models.get("DFlashDraftModel")
    ModelRegistry.models["DFlashDraftModel"] = DominoDraftModel
    try:
        yield
    finally:
        if old is None:
            ModelRegistry.models.pop("DFlashDraftModel", None)
        else:
            ModelRegistry.models["DFlashDraftModel"] = old


def _free_device_bytes() -> int:
    try:
        return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


def _memory_holder(sampler):
    """The op holding the draft sampler's table and buffers (``nbytes()``): the chain head's
    prepared op (``DominoDraftSampler`` binds the Triton head at construction: ``head_fn.op``),
    or tree mode's builder; None for the PyTorch head."""
    op = getattr(getattr(sampler, "head_fn", None), "op", None)
    return op if op is not None else getattr(sampler, "builder", None)


class DominoWorkerV2(DFlashWorkerV2):
    """DFlash V2 worker whose draft proposals come from the Domino head."""

    domino_config: DominoServeConfig

    def __init__(self, server_args, gpu_id, ps, nccl_port, target_worker):
        # before DFlash's __init__: it builds the draft sampler (init_cuda_graphs), which
        # reads the head switches
        self.domino_config = serve_config_of(server_args)
        with _draft_model_class_swapped():
            super().__init__(server_args, gpu_id, ps, nccl_port, target_worker)
        if not isinstance(self.draft_model, DominoDraftModel):
            raise RuntimeError(
                f"domino: the draft model loaded as {type(self.draft_model).__name__}, not "
                "DominoDraftModel; check architectures=['DFlashDraftModel'] in the draft config")
        self._domino_last_hidden = None
        self._domino_eager_sampler = None
        self._domino_sampled_drafter = None  # DOMINO_SAMPLED_DRAFTS: built on first use
        self._domino_draft_q = None  # q of the last sampled drafts, taken by narrow_round
        self._domino_eager_batches: set[int] = set()
        # set up in init_cuda_graphs (the scheduler calls it after the attention backends)
        self._domino_policy = None
        self._domino_meter = None
        self._domino_verify_states = None
        runner = self.draft_model_runner
        inner_forward = runner.forward

        def forward_keeping_hidden(forward_batch, *args, **kwargs):
            out = inner_forward(forward_batch, *args, **kwargs)
            logits_output = getattr(out, "logits_output", None)
            self._domino_last_hidden = getattr(logits_output, "hidden_states", None)
            return out

        runner.forward = forward_keeping_hidden
        if self.ps.tp_rank == 0:
            logger.info(
                "Domino worker ready: head=%s shift_label=%s pure_draft_prefix_len=%s block=%s",
                "on" if self.draft_model.has_domino_head else "off (plain DFlash checkpoint)",
                self.draft_model.domino_shift_label, self.draft_model.domino_pure_prefix_len,
                self.block_size)

    # ---- batch-adaptive verify width (issue #14; adaptive.py) --------------------------------
    def _domino_init_adaptive(self) -> None:
        """The width policy and its meter. The serve configuration already says off for
        tree mode, DOMINO_ADAPTIVE=0 and simulated acceptance; what only the built worker knows
        turns it off here: a draft window or a hybrid target."""
        self._domino_policy = None
        self._domino_meter = None
        policy = adaptive.policy_from_config(self.domino_config)
        if policy is None:
            return
        why = None
        if getattr(self, "use_compact_draft_cache", False):
            why = "--speculative-draft-window-size is set"
        elif getattr(self, "_need_mamba_verify_commit", False):
            why = "the target has recurrent (Mamba) state"
        if why is not None:
            logger.warning("Domino adaptive width OFF: %s (every round verifies the block)", why)
            return
        self._domino_policy = policy
        trace = self.domino_config.adaptive_trace if self.ps.tp_rank == 0 else None
        self._domino_meter = adaptive.RoundMeter(policy, self.device,
                                                 max_bs=self._domino_max_bs(), trace=trace)
        if trace:
            logger.info("Domino adaptive: per-round trace to %s (DOMINO_ADAPTIVE_TRACE)", trace)
        if self.ps.tp_rank == 0:
            logger.info("Domino adaptive width ON: candidates %s (from %s)",
                        {s.batch_size: s.widths for s in policy.slots},
                        self.domino_config.adaptive.source)

    def _domino_max_bs(self) -> int:
        try:
            return max(max(int(b) for b in get_exec().graph.cuda_graph_config.decode.bs),
                       int(self.server_args.max_running_requests or 0), 256)
        except Exception:  # noqa: BLE001 - graphs off or the config not published (tests)
            return max(int(getattr(self.server_args, "max_running_requests", 0) or 0), 256)

    # Domino's draft state: SGLang's, with a host path that does not grow with the batch.
    def _make_next_draft_input_prefill(self, *, bonus_tokens, seq_lens):
        return DominoDraftInputV2.make(bonus_tokens=bonus_tokens, new_seq_lens=seq_lens)

    def _make_next_draft_input_decode(self, *, bonus_tokens, new_seq_lens):
        return DominoDraftInputV2.make(bonus_tokens=bonus_tokens, new_seq_lens=new_seq_lens)

    def init_cuda_graphs(self):
        super().init_cuda_graphs()
        self._domino_init_adaptive()
        self._domino_init_sampled_drafts()
        self._domino_graph_bytes = 0
        try:
            self._domino_capture_verify_graphs()
        finally:
            if self.ps.tp_rank == 0:
                self._domino_memory_report()

    def _domino_capture_verify_graphs(self) -> None:
        if (self._domino_policy is None
                or get_exec().graph.cuda_graph_config.decode.backend == Backend.DISABLED):
            return
        widths = {w for s in self._domino_policy.slots for w in s.widths}
        free_before = _free_device_bytes()
        try:
            self._domino_verify_states = adaptive.build_verify_states(self, widths)
            self._domino_graph_bytes = max(0, free_before - _free_device_bytes())
        except Exception as exc:  # noqa: BLE001 - serve as before rather than not at all
            logger.error("Domino adaptive width OFF: capturing the target verify graphs for "
                         "widths %s failed (%s: %s); every round verifies the block",
                         sorted(widths), type(exc).__name__, exc)
            self._domino_policy = self._domino_meter = self._domino_verify_states = None

    def _domino_memory_report(self) -> None:
        """Log the device memory this plugin holds beyond stock DFLASH (the head's table and
        static buffers, or in tree mode the tree builder's; the adaptive width's extra verify
        graphs) and what it is worth in tokens of KV cache (target + draft bytes per token):
        the KV pool loses about that much at the same --mem-fraction-static (issue #14
        item 4)."""
        try:
            op = _memory_holder(self._draft_sampler)
            head = int(op.nbytes()) if op is not None else 0
            per_token = 0.0
            for runner in (self.target_worker.model_runner, self.draft_model_runner):
                pool = runner.token_to_kv_pool
                k, v = pool.get_kv_size_bytes()
                per_token += (k + v) / max(1, int(pool.size))
            extra = head + int(self._domino_graph_bytes)
            table = getattr(getattr(op, "weights", None), "gi_table", None)
            hint = ""
            if table is not None and table.dtype == torch.float32:  # bf16 halves it
                saved = table.numel() * 2
                hint = (f"; DOMINO_HEAD_GI_TABLE=bf16 would give back {saved / 2 ** 20:.1f} MiB"
                        f" (about {int(saved / per_token) if per_token else -1} tokens) at the "
                        "same measured speed, proposals may then differ from the spec's on "
                        "near ties (docs/serve_config.md, Memory)")
            logger.info(
                "Domino memory beyond stock DFLASH: head table + buffers %.1f MiB, adaptive "
                "verify graphs %.1f MiB; %.1f MiB in all = about %d tokens of KV cache (%.0f "
                "bytes per token, target + draft)%s", head / 2 ** 20,
                self._domino_graph_bytes / 2 ** 20, extra / 2 ** 20,
                int(extra / per_token) if per_token else -1, per_token, hint)
        except Exception as exc:  # noqa: BLE001 - a report, never a reason to fail
            logger.debug("Domino memory report unavailable: %s", exc)

    def _domino_init_sampled_drafts(self) -> None:
        """DOMINO_SAMPLED_DRAFTS=1 needs ``narrow_round``'s path; what only the built worker
        knows turns it off (as the adaptive width): a draft window or a hybrid target."""
        self._domino_sampled_drafts_on = bool(self.domino_config.sampled_drafts)
        if not self._domino_sampled_drafts_on:
            return
        why = None
        if self.__dict__.get("use_compact_draft_cache", False):
            why = "--speculative-draft-window-size is set"
        elif self.__dict__.get("_need_mamba_verify_commit", False):
            why = "the target has recurrent (Mamba) state"
        if why is not None:
            self._domino_sampled_drafts_on = False
            logger.warning("Domino sampled drafts OFF: %s (DOMINO_SAMPLED_DRAFTS=1 ignored; "
                           "sampled requests draft point masses)", why)
        elif self.ps.tp_rank == 0:
            logger.info("Domino sampled drafts ON: sampled requests draft from the head's "
                        "distribution and are verified with it (DOMINO_SAMPLED_DRAFTS=1)")

    def _domino_sampled_round(self, batch) -> bool:
        """This decode round drafts from q (DOMINO_SAMPLED_DRAFTS=1 and a sampled request in
        the batch): it runs through ``adaptive.narrow_round`` at any width."""
        on = self.__dict__.get("_domino_sampled_drafts_on")
        if on is None:  # before init_cuda_graphs (tests, eager start-up paths)
            on = bool(self.domino_config.sampled_drafts)
        return on and sampled_draft.wants_sampled_drafts(batch.sampling_info)

    def forward_batch_generation(self, batch, on_publish=None, grammar_barrier=None):
        policy = self._domino_policy
        decode = not (batch.forward_mode.is_extend() or batch.is_extend_in_batch
                      or batch.forward_mode.is_idle() or batch.spec_info is None
                      or getattr(batch, "return_logprob", False))
        if policy is None or not decode:
            if self._domino_meter is not None:
                self._domino_meter.interrupt()
            if decode and self._domino_sampled_round(batch):
                self._validate_phase1_sampling_support(batch)
                return adaptive.narrow_round(self, batch, int(self.block_size), on_publish,
                                             grammar_barrier)
            return super().forward_batch_generation(batch, on_publish, grammar_barrier)
        bs = len(batch.seq_lens)
        meter = self._domino_meter
        meter.drain()
        width = policy.choose(bs)
        if self.ps.tp_rank == 0:
            if policy.switched is not None:
                b, old, new = policy.switched
                logger.info("Domino adaptive: batch bucket %d -> verify width %d (was %s; "
                            "expected tokens %.2f)", b, new, old, policy.expected_tokens(new))
            if policy.round % SUMMARY_EVERY == 0:
                logger.info("Domino adaptive summary: %s", json.dumps(policy.summary()))
        meter.begin(bs, width)
        if width >= int(self.block_size) and not self._domino_sampled_round(batch):
            out = super().forward_batch_generation(batch, on_publish, grammar_barrier)
        else:
            self._validate_phase1_sampling_support(batch)
            out = adaptive.narrow_round(self, batch, width, on_publish, grammar_barrier)
        meter.end(out.accept_lens)
        return out

    def _domino_draft_block(self, batch):
        """Draft one full block as DFlash's round does (the draft CUDA graph with the head
        folded in, or the eager head): ``(block_ids, positions_2d, verify_loc_2d, draft_next)``,
        each ``[bs, B]`` (``draft_next``: ``[bs, B-1]``)."""
        draft_input = batch.spec_info
        bs, block = len(batch.seq_lens), int(self.block_size)
        prefix = batch.seq_lens
        req_to_token = self.model_runner.req_to_token_pool.req_to_token
        self._ensure_draft_block_buffers(bs)
        block_ids = self._draft_block_ids_buf[:bs]
        positions_2d = self._draft_block_positions_buf[:bs]
        loc_2d = self._draft_verify_out_cache_loc_buf[:bs]
        if self._use_triton_prepare_block:
            _prepare_dflash_draft_block_unchecked(
                bonus_tokens=draft_input.bonus_tokens.view(-1), prefix_lens=prefix.view(-1),
                req_pool_indices=batch.req_pool_indices.view(-1), req_to_token=req_to_token,
                block_ids_out=block_ids, positions_out=positions_2d, cache_loc_out=loc_2d,
                mask_token_id=int(self._mask_token_id))
        else:
            block_ids.fill_(int(self._mask_token_id))
            block_ids[:, 0].copy_(draft_input.bonus_tokens)
            torch.add(prefix.unsqueeze(1), self._block_pos_offsets, out=positions_2d)
            loc_2d.copy_(assign_extend_cache_locs_func(
                req_pool_indices=batch.req_pool_indices, req_to_token=req_to_token,
                start_offset=prefix, end_offset=prefix + block, batch_size=bs,
                draft_token_num=block, device=self.device).view(bs, block))
        draft_out = self._domino_draft_forward(batch, block_ids, positions_2d, loc_2d)
        self._domino_draft_q = None
        if self._domino_sampled_round(batch):
            full = self._domino_last_hidden
            if full is None or int(full.shape[0]) < bs * block:
                raise RuntimeError("domino: sampled drafting found no draft hidden states for "
                                   f"{bs} requests (DOMINO_SAMPLED_DRAFTS=1)")
            params = sampled_draft.draft_sampling_params(batch.sampling_info, bs)
            draft_next, self._domino_draft_q = self._domino_get_sampled_drafter()(
                full[: bs * block].view(bs, block, -1), block_ids[:, 0], params)
            return block_ids, positions_2d, loc_2d, draft_next
        if self._draft_sampler is not None and draft_out.can_run_graph:
            draft_next = self._draft_sampler.out[: bs * (block - 1)].view(bs, block - 1)
        else:
            hidden = draft_out.logits_output.hidden_states
            if hidden is None:
                raise RuntimeError("domino: the draft model returned no hidden states")
            hidden = hidden.view(bs, block, -1)
            draft_next = self._greedy_sample_from_vocab_parallel_head(
                hidden_states=hidden[:, 1:, :].reshape(-1, hidden.shape[-1]),
                lm_head=self.target_worker.model_runner.model.lm_head).view(bs, block - 1)
        return block_ids, positions_2d, loc_2d, draft_next

    def _domino_get_sampled_drafter(self) -> sampled_draft.SampledDrafter:
        """The sampled drafter, on the proposal seam's weights (built on first use)."""
        if self._domino_sampled_drafter is None:
            s = self._draft_sampler or self._domino_eager_sampler
            if s is None:
                s = self._domino_eager_sampler = self._domino_build_sampler(max_bs=1)
            self._domino_sampled_drafter = sampled_draft.SampledDrafter(
                s.lm_head, s.embed, s.head, block_size=s.block_size, shift_label=s.shift_label,
                pure_prefix_len=s.pure_prefix_len, gi_table=self.domino_config.head.gi_table)
            if self.ps.tp_rank == 0:
                logger.info("Domino: sampled requests draft from the head's distribution "
                            "(DOMINO_SAMPLED_DRAFTS=1, %s head)", self._domino_sampled_drafter.impl)
        return self._domino_sampled_drafter

    def _domino_draft_forward(self, batch, block_ids, positions_2d, loc_2d):
        """The draft model over the ``[bs, B]`` block ``[bonus, MASK...]`` as DFlash's round runs
        it (TARGET_VERIFY forward of the draft runner, its CUDA graph when it can; host bound of
        the draft sequence lengths = committed prefix + B); returns the runner's output."""
        draft_input = batch.spec_info
        bs, block = block_ids.shape
        prefix = batch.seq_lens
        seq_lens_cpu = self._draft_seq_lens_cpu_buf[:bs]
        if batch.seq_lens_cpu is not None:
            seq_lens_cpu.copy_(batch.seq_lens_cpu)
            seq_lens_cpu.add_(block)
            draft_sum = int(seq_lens_cpu.sum())
        elif draft_input.reserved_seq_lens_cpu is not None:
            seq_lens_cpu.copy_(draft_input.reserved_seq_lens_cpu)
            draft_sum = int(draft_input.reserved_seq_lens_sum)
        else:
            seq_lens_cpu.copy_(prefix.to("cpu", dtype=torch.int32))
            draft_sum = int(prefix.sum().item())
        embeds = self.target_worker.model_runner.model.get_input_embeddings()(block_ids)
        fb = ForwardBatch(
            forward_mode=ForwardMode.TARGET_VERIFY, batch_size=bs,
            input_ids=block_ids.flatten(), req_pool_indices=batch.req_pool_indices,
            seq_lens=prefix, out_cache_loc=loc_2d.reshape(-1), seq_lens_sum=draft_sum,
            seq_lens_cpu=seq_lens_cpu, positions=positions_2d.reshape(-1),
            input_embeds=embeds.view(-1, embeds.shape[-1]),
            spec_algorithm=SpeculativeAlgorithm.DFLASH, spec_info=self._draft_block_spec_info,
            capture_hidden_mode=CaptureHiddenMode.NULL)
        with torch.inference_mode():
            return self.draft_model_runner.forward(fb)

    # ---- the proposal seam --------------------------------------------------------------
    def _domino_build_sampler(self, max_bs: int) -> DominoDraftSampler:
        target_model = self._target_worker.model_runner.model
        lm_head = getattr(target_model, "lm_head", None)
        if lm_head is None or not hasattr(lm_head, "weight"):
            raise RuntimeError("domino: the target model exposes no lm_head.weight")
        if not torch.is_floating_point(lm_head.weight):
            raise RuntimeError("domino: the target lm_head is quantized; the Domino head needs "
                               "a floating-point lm_head")
        tp_group = get_tp_group() if int(self.server_args.tp_size or 1) > 1 else None
        if tp_group is not None and int(tp_group.world_size) > 1:
            return self._domino_build_tp_sampler(max_bs, target_model, lm_head, tp_group)
        if hasattr(lm_head, "shard_indices"):
            shard = lm_head.shard_indices
            if int(shard.num_added_elements) != 0 or int(shard.org_vocab_start_index) != 0:
                raise RuntimeError("domino: added or sharded vocabulary is not supported")
            num_org = int(shard.num_org_elements)
        else:
            num_org = int(self.draft_model.config.vocab_size)
        embed = target_model.get_input_embeddings().weight
        head = self.draft_model.domino_head_weights()
        if head is not None and int(head.w2.shape[0]) != num_org:
            raise RuntimeError(f"domino: head vocabulary {head.w2.shape[0]} != target lm_head "
                               f"vocabulary {num_org}")
        impl, fn = resolve_head_impl(lm_head.weight.device, lm_head.weight.dtype,
                                     options=self.domino_config.head)
        return DominoDraftSampler(
            lm_head=lm_head.weight[:num_org], embed=embed, head=head,
            block_size=int(self.block_size), shift_label=self.draft_model.domino_shift_label,
            pure_prefix_len=self.draft_model.domino_pure_prefix_len, max_bs=max_bs,
            head_fn=fn, impl_name=impl)

    def _domino_build_tp_sampler(self, max_bs: int, target_model, lm_head,
                                 tp_group) -> DominoDraftSampler:
        """TP >= 2: the PyTorch head over this rank's vocabulary shard of the lm_head, the input
        embedding and W2 (GRU, W1 replicated), one all-gather per proposal through SGLang's TP
        group (docs/tp.md)."""
        world = int(tp_group.world_size)
        vocab = int(getattr(lm_head, "org_vocab_size", 0) or self.draft_model.config.vocab_size)
        if self.draft_model.has_domino_head and int(self.draft_model.config.vocab_size) != vocab:
            raise RuntimeError(f"domino: head vocabulary {self.draft_model.config.vocab_size} != "
                               f"target lm_head vocabulary {vocab}")
        start, vp, embed = vocab_shard_layout(lm_head, target_model.get_input_embeddings(),
                                              world=world, vocab_size=vocab)
        impl, _ = resolve_head_impl(lm_head.weight.device, lm_head.weight.dtype, tp_size=world,
                                    options=self.domino_config.head)
        head = self.draft_model.domino_head_weights(vocab_shard=(start, vp))
        fn = TorchDominoHeadTP(group=tp_group, shard_start=start, vocab_shard=vp,
                               vocab_size=vocab)
        return DominoDraftSampler(
            lm_head=lm_head.weight, embed=embed, head=head, block_size=int(self.block_size),
            shift_label=self.draft_model.domino_shift_label,
            pure_prefix_len=self.draft_model.domino_pure_prefix_len, max_bs=max_bs,
            head_fn=fn, impl_name=f"{impl}, tp={world}")

    def _maybe_build_draft_sampler(self):
        if self.domino_config.eager_draft_sampler:
            logger.info("Domino head kept eager (SGLANG_DFLASH_EAGER_DRAFT_SAMPLER=1)")
            return None
        sampler = self._domino_build_sampler(max(get_exec().graph.cuda_graph_config.decode.bs))
        if self.ps.tp_rank == 0:
            logger.info("Domino head (%s) folded into the draft cuda graph", sampler.impl_name)
        return sampler

    def _greedy_sample_from_vocab_parallel_head(self, *, hidden_states, lm_head,
                                                chunk_size: int = 256):
        n_prop = int(self.block_size) - 1
        num = int(hidden_states.shape[0])
        if num == 0:
            return torch.empty((0,), dtype=torch.long, device=hidden_states.device)
        bs = num // n_prop
        full = self._domino_last_hidden
        if full is None or int(full.shape[0]) < bs * int(self.block_size):
            raise RuntimeError("domino: the eager draft head found no draft hidden states for "
                               f"{bs} requests")
        if self._domino_eager_sampler is None:
            self._domino_eager_sampler = self._domino_build_sampler(max_bs=1)
        if bs not in self._domino_eager_batches:  # once per size: the eager path costs launches
            self._domino_eager_batches.add(bs)
            logger.info("Domino head ran eagerly (outside the draft CUDA graph) at batch %d", bs)
        out = torch.empty((bs, n_prop), dtype=torch.long, device=hidden_states.device)
        bonus = self._draft_block_ids_buf[:bs, 0]
        self._domino_eager_sampler.propose(full[: bs * int(self.block_size)], bonus, out)
        return out.view(-1)
