"""Domino's draft state across decode rounds: SGLang's ``DFlashDraftInputV2`` with a host path
whose cost does not grow with the batch (issue #14, item 1).

The H100 profile of session 8 (``benchmarks/results/session8_20261207/profile_h100``) put most
of the round's growth from batch 1 to 64 in ``scheduler.get_next_batch_to_run``: SGLang
0.5.17's ``DFlashDraftInputV2.prepare_for_decode`` writes three CPU-tensor scalars per request
(``buf[i] = x``: a ``select`` and a ``copy_`` each) and ``alloc_for_spec_decode`` reads one back
per request (``int(t[i])``): about 260 ``aten::select`` and 210 ``aten::copy_`` per round at
batch 64. :class:`DominoDraftInputV2` computes the same lengths with Python ints, fills each
buffer with one copy, and sets ``req.kv.kv_allocated_len`` from the ints. State after the call
is identical to SGLang's (``tests/sglang_plugin/test_draft_input.py`` checks it field by
field): the same buffers (fresh per instance, as SGLang's, so the non-blocking host-to-device
copies never read a buffer a later round rewrites), the same allocation and ``req_to_token``
writes, the same plan-stream ordering.

The chain and tree workers return it from ``_make_next_draft_input_prefill`` /
``_make_next_draft_input_decode``; SGLang's idle input (``create_idle_input`` on the base class)
keeps SGLang's path, which is correct and only slower.
"""

from __future__ import annotations

import torch
from sglang.srt.mem_cache.allocation import (ALLOC_EXTEND_FUNCS, alloc_token_slots,
                                             assign_req_to_token_pool_func, get_last_loc)
from sglang.srt.runtime_context import get_spec
from sglang.srt.speculative import dflash_info_v2 as _dflash_info
from sglang.srt.speculative.dflash_info_v2 import DFlashDraftInputV2


_ELEMENT_WRITES_UP_TO = 2  # batch sizes filled element-wise (bench_host_prepare.py: cheaper)


class DominoDraftInputV2(DFlashDraftInputV2):
    """``DFlashDraftInputV2`` whose ``prepare_for_decode`` does no per-request tensor access."""

    @classmethod
    def make(cls, *, bonus_tokens: torch.Tensor, new_seq_lens: torch.Tensor):
        """As SGLang's ``draft_worker_common.make_draft_input_v2``."""
        bs = int(new_seq_lens.numel())
        device = bonus_tokens.device
        return cls(topk_p=torch.empty((bs, 0), device=device, dtype=torch.float32),
                   topk_index=torch.empty((bs, 0), device=device, dtype=torch.int64),
                   bonus_tokens=bonus_tokens.to(dtype=torch.int64),
                   new_seq_lens=new_seq_lens.to(dtype=torch.int64),
                   hidden_states=torch.empty((bs, 0), device=device, dtype=torch.float16))

    def prepare_for_decode(self, batch) -> None:
        """Reserve ``committed + 2 x block`` KV slots per request for the next round (as SGLang's
        ``DFlashDraftInputV2.prepare_for_decode``, same resulting state)."""
        bs = batch.batch_size()
        if bs == 0:
            return
        block = int(get_spec().speculative_num_draft_tokens)
        if block <= 0:
            raise ValueError(f"DFLASH invalid speculative_num_draft_tokens={block}.")
        plan_stream, plan_stream_ctx = _dflash_info._get_overlap_plan_stream(batch.device)
        self._ensure_prepare_length_buffers(bs, batch.device)

        reqs = batch.reqs
        committed = [int(r.kv_committed_len) for r in reqs]
        cur = [int(r.kv.kv_allocated_len) for r in reqs]
        reserved = [max(c, k + 2 * block) for c, k in zip(cur, committed)]
        top_ks = [int(r.sampling_params.top_k) for r in reqs]
        self.max_top_k = max(max(top_ks), 1)
        self.uniform_top_k_value = top_ks[0] if top_ks.count(top_ks[0]) == bs else None

        seq_lens_cpu = self._prepare_batch_seq_lens_cpu_buf[:bs]
        cur_cpu = self._prepare_cur_kv_lens_cpu_buf[:bs]
        nxt_cpu = self._prepare_nxt_kv_lens_cpu_buf[:bs]
        if bs <= _ELEMENT_WRITES_UP_TO:  # a few element writes cost less than 3 new tensors
            for i in range(bs):
                seq_lens_cpu[i], cur_cpu[i], nxt_cpu[i] = committed[i], cur[i], reserved[i]
        else:
            seq_lens_cpu.copy_(torch.tensor(committed, dtype=seq_lens_cpu.dtype))
            cur_cpu.copy_(torch.tensor(cur, dtype=cur_cpu.dtype))
            nxt_cpu.copy_(torch.tensor(reserved, dtype=nxt_cpu.dtype))
        reserved_sum = sum(reserved)
        needed = reserved_sum - sum(cur)

        caller_stream = None
        if plan_stream is not None:
            caller_stream = torch.get_device_module(batch.device).current_stream()
        with plan_stream_ctx:
            if caller_stream is not None:
                # the scheduler stream may just have rebuilt seq_lens / req_pool_indices
                plan_stream.wait_stream(caller_stream)
            cur_dev = self._prepare_cur_kv_lens_gpu_buf[:bs]
            nxt_dev = self._prepare_nxt_kv_lens_gpu_buf[:bs]
            cur_dev.copy_(cur_cpu, non_blocking=True)
            nxt_dev.copy_(nxt_cpu, non_blocking=True)
            if needed > 0:
                _alloc_and_map(batch, cur_dev, cur_cpu, nxt_dev, nxt_cpu, needed)
        for r, n in zip(reqs, reserved):  # reserved >= the current watermark
            r.kv.kv_allocated_len = n
        if caller_stream is not None:
            caller_stream.wait_stream(plan_stream)

        batch.seq_lens_cpu = seq_lens_cpu
        batch.seq_lens_sum = sum(committed)
        self.reserved_seq_lens_cpu = nxt_cpu
        self.reserved_seq_lens_sum = reserved_sum


def _alloc_and_map(batch, cur_dev, cur_cpu, nxt_dev, nxt_cpu, needed: int) -> None:
    """The allocation half of SGLang's ``alloc_for_spec_decode`` (its per-request watermark
    loop is done by the caller with Python ints): ``needed`` new KV slots, written into
    ``req_to_token[req, cur:nxt]``."""
    tree_cache = batch.tree_cache
    req_to_token = batch.req_to_token_pool.req_to_token
    if tree_cache.token_to_kv_pool_allocator.page_size == 1:
        out_cache_loc = alloc_token_slots(tree_cache, needed)
    else:
        last_loc = get_last_loc(req_to_token, batch.req_pool_indices, cur_dev)
        device_type = getattr(batch.device, "type", str(batch.device).split(":", 1)[0])
        out_cache_loc = ALLOC_EXTEND_FUNCS[device_type](
            tree_cache, cur_dev, cur_cpu, nxt_dev, nxt_cpu, last_loc, needed,
            req_pool_indices=batch.req_pool_indices, batch=batch)
    assign_req_to_token_pool_func(batch.req_pool_indices, req_to_token, cur_dev, nxt_dev,
                                  out_cache_loc, len(batch.reqs))
