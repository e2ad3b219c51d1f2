"""``DominoTreeWorkerV2``: Domino TREE mode on SGLang 0.5.17 (issue 3).

**EXPERIMENTAL** (greedy lossless on the H200, slower than chain so far; docs/tree_mode.md).
Reachable as an explicit option: ``--speculative-eagle-topk`` in [2, 8] with
``--speculative-num-draft-tokens`` N (the node budget) puts a tree shape in the serve
configuration (``serve_config.DominoServeConfig``), and the plugin factory then returns this
class and arms :func:`tree_mask_policy` (``sglang_plugin._factory``); server arguments are
resolved and refused in ``serve_config`` / ``validate`` (``check_tree_server_args``). Only its
pure parts (``tree_glue``, ``tree_mask_policy``), its import, the resolution and the factory
are tested on CPU.

Overrides (see the design note): ``__init__`` (re-sets the B-sized draft state after DFlash sized
it from ``speculative_num_draft_tokens`` = N), ``_maybe_build_draft_sampler`` (None: the tree is
built eagerly after the draft graph), and the decode branch of ``forward_batch_generation``
(prefill and idle delegate to DFlash's).
"""

from __future__ import annotations

import logging

import torch

from sglang.kernels.ops.speculative.cache_locs import assign_extend_cache_locs_func
from sglang.srt.managers.scheduler import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
from sglang.srt.runtime_context import get_exec
from sglang.srt.speculative.dflash_info import DFlashVerifyInput
from sglang.srt.speculative.dflash_info_v2 import DFlashDraftInputV2
from sglang.srt.speculative.dflash_utils import (apply_dflash_verify_logits_adjustments,
                                                  build_dflash_verify_target_probs,
                                                  is_dflash_sampling_verify_available)
from sglang.srt.speculative.draft_worker_common import (build_block_pos_offsets,
                                                        make_draft_block_spec_info)
from sglang.srt.speculative.eagle_utils import TreeMaskMode

from ..ops.tree_build import PreparedTreeBuilder, TreeDraftSampler
from . import tree_glue as tg
from .adaptive import verify_forward
from .serve_config import current_serve_config
from .worker import DominoWorkerV2

logger = logging.getLogger(__name__)

def tree_mask_policy(result, *args, **kwargs):
    """AFTER hook for ``dflash_utils.resolve_dflash_verify_mask_policy``: capture the target
    verify graph WITH a custom mask when the ``ServerArgs`` SGLang published in this process
    (``get_context().server_args``, set before the target graph is captured) carry a tree-mode
    Domino serve configuration; else keep DFlash's answer."""
    cfg = current_serve_config()
    if cfg is None or not cfg.tree_mode:
        return None
    name, _ = result
    return name, True


class DominoTreeWorkerV2(DominoWorkerV2):
    """Domino tree mode: draft width B, verify width N (node budget), tree mask, path commit."""

    _tree_impl = "auto"  # the tree build and layout kernels ("auto": Triton on CUDA)

    def __init__(self, server_args, gpu_id, ps, nccl_port, target_worker):
        super().__init__(server_args, gpu_id, ps, nccl_port, target_worker)
        cfg = self.domino_config  # set by DominoWorkerV2 from server_args
        if not cfg.tree_mode:
            raise ValueError("[domino] DominoTreeWorkerV2 built with a chain-mode serve config "
                             "(--speculative-eagle-topk 1)")
        self._planted_wrong_residual = cfg.sampled_verify == "planted-wrong-residual"
        if self._planted_wrong_residual:
            logger.error("domino tree: DOMINO_SAMPLED_VERIFY=planted-wrong-residual: sampled "
                         "requests get a DELIBERATELY WRONG bonus after a rejection (power "
                         "checks only); outputs are NOT lossless")
        if server_args.page_size != 1:
            raise ValueError("[domino] tree mode commits by permuting req_to_token: "
                             "--page-size must be 1")
        if self.use_compact_draft_cache:
            raise ValueError("[domino] tree mode does not support "
                             "--speculative-draft-window-size yet")
        n_nodes = int(server_args.speculative_num_draft_tokens)
        block = int(server_args.speculative_dflash_block_size)
        if (block, n_nodes) != (cfg.block_size, cfg.num_verify_tokens):
            raise ValueError(f"[domino] tree mode: speculative_dflash_block_size={block}, "
                             f"speculative_num_draft_tokens={n_nodes}; the serve config says "
                             f"B={cfg.block_size}, N={cfg.num_verify_tokens}")
        # DFlashWorkerV2.__init__ sized these from speculative_num_draft_tokens (= N).
        self.block_size = block
        self.speculative_num_draft_tokens = n_nodes
        self._block_pos_offsets = build_block_pos_offsets(length=block, device=self.device)
        self._draft_block_spec_info = make_draft_block_spec_info(draft_token_num=block,
                                                                 device=self.device)
        self._tree_n = n_nodes
        self._tree_builder: PreparedTreeBuilder | None = None

    def init_attention_backends(self):
        super().init_attention_backends()
        if self._need_mamba_verify_commit:  # backstop of validate._target_is_mambaish
            raise ValueError("[domino] tree mode does not support Mamba / hybrid linear-"
                             "attention targets (recurrent state is committed after a chain "
                             "verify); serve this target in chain mode")

    def _new_tree_builder(self) -> PreparedTreeBuilder:
        """A builder on the target's LM head / embedding and the head weights (the head's kernel
        weights are prepared once and shared by every builder: ``ops.domino_head.
        prepared_weights``); each builder has its own workspace."""
        target_model = self.target_worker.model_runner.model
        cfg = self.domino_config
        return PreparedTreeBuilder(
            target_model.lm_head.weight, target_model.get_input_embeddings().weight,
            self.draft_model.domino_head_weights(), block_size=int(self.block_size),
            topk=cfg.tree_topk, budget=cfg.tree_budget, impl=self._tree_impl,
            gi_table_dtype=cfg.head.gi_table)

    def _maybe_build_draft_sampler(self):
        """The tree build folded into the draft CUDA graph (``ops.tree_build.TreeDraftSampler``
        on static buffers for the largest captured batch); None keeps it eager
        (``SGLANG_DFLASH_EAGER_DRAFT_SAMPLER=1``)."""
        if self.domino_config.eager_draft_sampler:
            logger.info("Domino tree build kept eager (SGLANG_DFLASH_EAGER_DRAFT_SAMPLER=1)")
            return None
        builder = self._new_tree_builder()
        sampler = TreeDraftSampler(
            builder, max_batch=max(get_exec().graph.cuda_graph_config.decode.bs),
            shift_label=self.draft_model.domino_shift_label,
            pure_prefix_len=self.draft_model.domino_pure_prefix_len)
        lm = builder.lm_head
        problem = sampler.self_check(int(lm.shape[1]), lm.dtype, int(lm.shape[0]))
        if problem is not None:
            logger.warning("Domino tree build kept eager: its draft-graph capture failed the "
                           "start-up check (%s)", problem)
            return None
        if self.ps.tp_rank == 0:
            logger.info("Domino tree build (top-k %d, %d nodes) folded into the draft cuda graph",
                        self.domino_config.tree_topk, self._tree_n)
        return sampler

    def _verify_mask_buffer(self, bs: int):
        """The target backend's preallocated verify mask when it takes the FULL layout that
        ``tree_layout`` writes and this batch fits (as SGLang's EAGLE writes its tree mask): the
        mask then needs no per-round host read of its size. None otherwise (the layout then
        allocates the mask, reading its size on the host)."""
        vm = getattr(self.target_worker.model_runner.attn_backend, "verify_mask", None)
        if vm is None or not vm.is_read or vm.mode != TreeMaskMode.FULL_MASK or not vm.fits(bs):
            return None
        return vm.buffer

    # ---- decode -----------------------------------------------------------------------------
    def forward_batch_generation(self, batch, on_publish=None, grammar_barrier=None):
        if (batch.forward_mode.is_extend() or batch.is_extend_in_batch
                or batch.forward_mode.is_idle() or batch.spec_info is None):
            out = super().forward_batch_generation(batch, on_publish, grammar_barrier)
            if out.speculative_num_draft_tokens is not None:
                out.speculative_num_draft_tokens = self._tree_n
            return out
        if getattr(batch, "return_logprob", False):
            raise ValueError("DOMINO tree mode does not support return_logprob.")
        if batch.has_grammar:
            raise ValueError("DOMINO tree mode does not support grammar-constrained requests "
                             "yet (GrammarTree is chain-only).")
        self._validate_phase1_sampling_support(batch)
        return self._forward_decode_tree(batch, on_publish)

    def _forward_decode_tree(self, batch, on_publish):
        draft_input = batch.spec_info
        assert isinstance(draft_input, DFlashDraftInputV2)
        batch.seq_lens.record_stream(torch.get_device_module(self.device).current_stream())
        bs, dev = len(batch.seq_lens), self.device
        b_sz, n = int(self.block_size), self._tree_n
        prefix = batch.seq_lens
        req_to_token = self.model_runner.req_to_token_pool.req_to_token

        # 1) draft block (width B), as DFlash's eager twin
        self._ensure_draft_block_buffers(bs)
        block_ids = self._draft_block_ids_buf[:bs]
        positions_2d = self._draft_block_positions_buf[:bs]
        block_ids.fill_(int(self._mask_token_id))
        block_ids[:, 0].copy_(draft_input.bonus_tokens)
        torch.add(prefix.unsqueeze(1), self._block_pos_offsets, out=positions_2d)
        verify_loc = assign_extend_cache_locs_func(
            req_pool_indices=batch.req_pool_indices, req_to_token=req_to_token,
            start_offset=prefix, end_offset=prefix + n, batch_size=bs, draft_token_num=n,
            device=dev).view(bs, n)
        draft_loc = verify_loc[:, :b_sz].contiguous()
        draft_out = self._domino_draft_forward(batch, block_ids, positions_2d, draft_loc)

        # 2) the tree: built inside the draft graph replay, or eagerly here (a batch beyond
        # the captured sizes, or the eager switch); 3) verify tensors, the mask written into
        # the target backend's own buffer when it fits
        if self._draft_sampler is not None and draft_out.can_run_graph:
            tree = self._draft_sampler.tree(bs)
        else:
            hidden = draft_out.logits_output.hidden_states[: bs * b_sz].view(bs, b_sz, -1)
            if self._tree_builder is None:  # own workspace; the head weights are shared
                self._tree_builder = self._new_tree_builder()
            tree = self._tree_builder(hidden, block_ids[:, 0],
                                      shift_label=self.draft_model.domino_shift_label,
                                      pure_prefix_len=self.draft_model.domino_pure_prefix_len)
        vt = tg.build_tree_verify_tensors(tree.tokens, tree.parents, prefix, block_size=b_sz,
                                          impl=self._tree_impl,
                                          mask_out=self._verify_mask_buffer(bs))

        # 4) target verify with the tree mask
        verify_input = DFlashVerifyInput(
            draft_token=vt.draft_token, positions=vt.positions, draft_token_num=n,
            custom_mask=vt.custom_mask, capture_hidden_mode=CaptureHiddenMode.FULL)
        batch.out_cache_loc = verify_loc.reshape(-1)
        target_out = verify_forward(self, batch, verify_input, n)
        logits_output = target_out.logits_output
        sampling_info = batch.sampling_info
        if sampling_info is not None:
            apply_dflash_verify_logits_adjustments(
                next_token_logits=logits_output.next_token_logits,
                sampling_info=sampling_info, draft_token_num=n)

        # 5) accept
        predicts, accept_index, accept_num = tg.alloc_accept_buffers(bs, n, vt.max_depth, dev)
        planted = None
        if (sampling_info is not None and not sampling_info.is_all_greedy
                and is_dflash_sampling_verify_available()):
            from sgl_kernel import tree_speculative_sampling_target_only

            from sglang.srt.runtime_context import get_spec

            target_probs = build_dflash_verify_target_probs(
                next_token_logits=logits_output.next_token_logits,
                sampling_info=sampling_info, draft_token_num=n, bs=bs,
                max_top_k=draft_input.max_top_k,
                uniform_top_k_value=draft_input.uniform_top_k_value)
            spec = get_spec()
            if self._planted_wrong_residual:
                planted = target_probs.view(bs, n, -1)
            tree_speculative_sampling_target_only(
                predicts=predicts, accept_index=accept_index, accept_token_num=accept_num,
                candidates=vt.candidates, retrive_index=vt.retrieve_index,
                retrive_next_token=vt.retrieve_next_token,
                retrive_next_sibling=vt.retrieve_next_sibling,
                uniform_samples=torch.rand((bs, n), dtype=torch.float32, device=dev),
                uniform_samples_for_final_sampling=torch.rand((bs,), dtype=torch.float32,
                                                              device=dev),
                target_probs=target_probs, draft_probs=torch.zeros_like(target_probs),
                threshold_single=float(spec.speculative_accept_threshold_single),
                threshold_acc=max(float(spec.speculative_accept_threshold_acc), 1e-9),
                deterministic=True)
        else:
            from sglang.srt.speculative.eagle_utils import verify_tree_greedy_func

            target_predict = torch.argmax(logits_output.next_token_logits, dim=-1).view(bs, n)
            verify_tree_greedy_func(predicts, accept_index, accept_num, vt.candidates,
                                    vt.retrieve_index, vt.retrieve_next_token,
                                    vt.retrieve_next_sibling, target_predict)
        acc = tg.accept_from_sglang(predicts, accept_index, accept_num, n)
        if planted is not None:  # power checks only: a deliberately wrong residual
            acc.bonus = tg.planted_wrong_residual_bonus(acc, planted, torch.rand(
                (bs,), dtype=torch.float32, device=dev)).to(acc.bonus.dtype)

        # 6) commit: permute the verify slots so the accepted path is contiguous
        perm = tg.commit_permutation(acc.path, acc.accept_len, n)
        committed_loc = tg.permute_verify_locs(verify_loc, perm)
        tg.write_req_to_token_rows(req_to_token, batch.req_pool_indices, prefix, committed_loc)
        new_seq_lens = prefix + acc.commit_lens.to(prefix.dtype)
        if on_publish is not None:
            on_publish(new_seq_lens)

        # 7) draft KV from the target hidden states of the accepted path
        full_hidden = logits_output.hidden_states
        if full_hidden is None:
            raise RuntimeError("DOMINO tree verify requires target hidden states.")
        rows = tg.gather_path_rows(full_hidden, acc.path, n, width=n)
        commit_pos = (prefix.to(torch.int64)[:, None]
                      + torch.arange(n, device=dev, dtype=torch.int64)[None, :])
        self._append_target_hidden_to_draft_kv_by_loc(
            target_hidden=rows, cache_loc=committed_loc.reshape(-1),
            cache_loc_2d=committed_loc, positions=commit_pos.reshape(-1),
            commit_lens=acc.commit_lens)
        logits_output.hidden_states = None

        # 8) result
        out_tokens = tg.out_tokens_from_path(tree.tokens, acc.path, acc.accept_len, acc.bonus,
                                             stride=n)
        return GenerationBatchResult(
            logits_output=logits_output, next_token_ids=out_tokens.reshape(-1),
            accept_lens=acc.commit_lens, can_run_cuda_graph=target_out.can_run_cuda_graph,
            next_draft_input=self._make_next_draft_input_decode(bonus_tokens=acc.bonus,
                                                                new_seq_lens=new_seq_lens),
            speculative_num_draft_tokens=n, new_seq_lens=new_seq_lens)
