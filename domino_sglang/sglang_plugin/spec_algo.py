"""``DominoSpecAlgo``: the algorithm object SGLang 0.5.17 gets for ``--speculative-algorithm
domino``. It answers exactly like ``SpeculativeAlgorithm.DFLASH`` wherever SGLang branches on
the algorithm, so every DFLASH branch takes the DFLASH path for DOMINO. Sites (SGLang 0.5.17,
``sglang/srt/``), each handled by the answer named:

==========================================================================  ==================
site                                                                        answer / handling
==========================================================================  ==================
arg_groups/speculative_hook.py:129 ``validate_server_args``                 Domino checks
arg_groups/speculative_hook.py:144 ``handle_server_args``                   DFLASH's, + checks
speculative/spec_registry.py:110 ``create_worker`` (overlap gate)           supports_overlap
managers/scheduler.py:1026 ``init_model_worker``                            is_dflash_family
managers/scheduler.py:1294 ``init_disaggregation``                          carries_draft_hidden_states
managers/scheduler.py:1428 ``init_overlap``                                 create_future_map
managers/overlap_utils.py:305 ``FutureMap._lazy_init_forward_buf``          need_topk
managers/scheduler.py:2441 ``handle_generate_request`` (no logprob)         is_dflash_family
managers/scheduler.py:3588 ``run_batch``; schedule_batch.py:2153            supports_grammar_overlap
speculative/spec_utils.py:1037 ``spec_prepare_for_decode``                  is_dflash_family
model_runner_components/spec_aux_hidden_state.py:105 (aux layer capture)    is_dflash_family
model_executor/pool_configurator.py:166 (draft KV in the cell size)         is_dflash_family
model_executor/model_runner.py:1207 ``configure_kv_cache_dtype``            is_dflash_family
runner/decode_cuda_graph_runner.py:275; runner/base_runner.py:391           supports_target_verify_for_draft
runner/decode_cuda_graph_runner.py:978, 1070, 1133 (draft input_embeds)     is_dflash_family
runner/decode_cuda_graph_runner.py:1203 ``execute`` (WAR read-done event)   is_dflash_family
runner/decode_cuda_graph_runner.py:1307 ``get_spec_info``                   is_dflash_family
speculative/spec_info.py:419 ``create_dummy_verify_input``                  is_dflash_family
runner/prefill_cuda_graph_runner.py:292 (FULL hidden capture)               is_dflash_family
speculative/spec_utils.py:112 ``resolve_num_tokens_per_req``                get_num_tokens_per_req_... (N; B: tree draft)
decode_cuda_graph_runner.py:121 / mem_cache/allocation_sizing.py:25         supports_ragged_verify False / has_draft_kv True
decode_cuda_graph_runner.py:1111 (DP attention only; refused)               is_dflash_family
disaggregation/decode_schedule_batch_mixin.py:145                           build_disagg_draft_input -> None
hardware_backend/npu/graph_runner/npu_graph_runner.py:221 (NPU only)        is_dflash
==========================================================================  ==================

String checks on the name (DOMINO is "not DFLASH" there): ``spec_utils.py:260
spec_need_hidden_states`` (a zero-width FutureMap relay buffer: harmless, left alone),
``speculative_hook.py:114`` (a spurious "draft-window-size has no effect" warning; the window is
honoured), ``server_args.py:5602`` (``extra_buffer_lazy``: refused in ``validate_server_args``),
``server_args.py:6202`` / ``kv_cache_configurator.py:770`` (Kimi-Linear only), LoRA (refused).
The draft ``ForwardBatch`` built by ``DFlashWorkerV2`` hard-codes ``SpeculativeAlgorithm.DFLASH``
(``dflash_worker_v2.py:1622``): harmless, DOMINO answers the same.

Configuration (docs/serve_config.md): ``validate.validate_server_args`` (the registered
``validate_server_args`` hook) resolves the one frozen ``DominoServeConfig`` and stores it on the
``ServerArgs``; :meth:`DominoSpecAlgo.handle_server_args` runs DFLASH's resolution around it.

Tree mode (EXPERIMENTAL, docs/tree_mode.md §1): ``handle_server_args`` lets DFLASH resolve the
draft block B from ``speculative_dflash_block_size = B`` (the configuration's), then sets
``speculative_num_draft_tokens = N`` (the node budget's verify width). The draft runner keeps
width B: ``get_num_tokens_per_req_for_target_verify(N, is_draft_worker=True)`` returns B. That
SGLang call-back gets no ``server_args``, so it reads the configuration of the ``ServerArgs``
SGLang published in the process's runtime context (``serve_config.current_serve_config``: the
scheduler's, or the draft worker's deep copy while the draft worker is built); the algorithm
object itself holds no state. Chain mode (or nothing published): DFLASH's answer.
"""

from __future__ import annotations

from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
from sglang.srt.speculative.spec_registry import CustomSpecAlgo

from .serve_config import current_serve_config, serve_config_of
from .validate import check_resolved_server_args

_DFLASH = SpeculativeAlgorithm.DFLASH


class DominoSpecAlgo(CustomSpecAlgo):
    """A ``CustomSpecAlgo`` that mirrors ``SpeculativeAlgorithm.DFLASH`` (see module doc)."""

    # predicates: DFLASH's answers
    def is_dflash(self) -> bool:
        return True

    def is_dflash_family(self) -> bool:
        return True

    def supports_target_verify_for_draft(self) -> bool:
        return True

    def supports_grammar_overlap(self) -> bool:
        return True

    def supports_ragged_verify(self) -> bool:
        return False

    def has_draft_kv(self) -> bool:
        return True

    # methods CustomSpecAlgo lacks in 0.5.17
    def carries_draft_hidden_states(self) -> bool:
        return False

    def need_topk(self) -> bool:
        return False

    def create_future_map(self, device, req_to_token_pool, needs_cpu_seq_lens: bool = True,
                          needs_confidence_relay: bool = False):
        from sglang.srt.managers.overlap_utils import FutureMap

        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens,
                         needs_confidence_relay)

    def get_platform_worker_cls(self):  # asked by newer SGLang; 0.5.17 never calls it
        return None

    # tree mode: the draft runner keeps the draft block B while the target verifies N
    def get_num_tokens_per_req_for_target_verify(self, num_draft_tokens: int,
                                                 is_draft_worker: bool) -> int:
        if is_draft_worker:
            cfg = current_serve_config()
            if (cfg is not None and cfg.tree_mode
                    and int(num_draft_tokens) == cfg.num_verify_tokens):
                return cfg.block_size
        return num_draft_tokens

    # server args: DFLASH's resolution around the serve configuration, then the check
    def handle_server_args(self, server_args) -> None:
        cfg = serve_config_of(server_args)  # stored by validate_server_args
        if cfg.tree_mode:
            # DFLASH takes B from the block flag and forces topk 1 (silently when unset: the
            # branching lives in the serve config); then the verify width becomes N
            server_args.speculative_num_draft_tokens = None
            server_args.speculative_dflash_block_size = cfg.block_size
            server_args.speculative_eagle_topk = None
            _DFLASH.handle_server_args(server_args)
            server_args.speculative_num_draft_tokens = cfg.num_verify_tokens
        else:
            _DFLASH.handle_server_args(server_args)
        check_resolved_server_args(server_args)
