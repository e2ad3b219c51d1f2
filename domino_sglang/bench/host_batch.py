"""Stand-ins for the scheduler objects a draft input's ``prepare_for_decode`` touches (requests
with KV watermarks and top-k, a page-size-1 allocator, a chunk tree cache, a ``req_to_token``
pool), for the CPU test that compares Domino's host path with SGLang's and for
``benchmarks/bench_host_prepare.py``. SGLang-free; :func:`patched_sglang` needs SGLang."""

from __future__ import annotations

import contextlib
import random
from types import SimpleNamespace

import torch

POOL_COLS = 4096


class Allocator:
    page_size = 1

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.next_slot = 1  # slot 0 is SGLang's padding slot
        self.calls = []

    def available_size(self):
        return 10 ** 9

    def alloc(self, n):
        self.calls.append(n)
        out = torch.arange(self.next_slot, self.next_slot + n, dtype=torch.int64,
                           device=self.device)
        self.next_slot += n
        return out


class TreeCache:
    def __init__(self, device="cpu"):
        self.token_to_kv_pool_allocator = Allocator(device)

    def is_chunk_cache(self):
        return True


def make_batch(bs: int, seed: int, block: int, device="cpu") -> SimpleNamespace:
    """``bs`` running requests with mixed committed lengths, headroom (some need no new slots,
    some need a whole reservation) and top-k, each on its own ``req_to_token`` row."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(bs):
        committed = rng.randint(3, 900)
        allocated = committed + rng.choice([0, 5, 2 * block, 2 * block + 7])
        reqs.append(SimpleNamespace(
            kv_committed_len=committed, kv=SimpleNamespace(kv_allocated_len=allocated),
            sampling_params=SimpleNamespace(top_k=rng.choice([1, 1, 20]))))
    rows = bs + 16
    pool = torch.zeros(rows, POOL_COLS, dtype=torch.int32, device=device)
    idx = torch.tensor(rng.sample(range(rows), bs), dtype=torch.int64, device=device)
    cache = TreeCache(device)
    return SimpleNamespace(reqs=reqs, device=torch.device(device), tree_cache=cache,
                           token_to_kv_pool_allocator=cache.token_to_kv_pool_allocator,
                           req_to_token_pool=SimpleNamespace(req_to_token=pool),
                           req_pool_indices=idx, seq_lens_cpu=None, seq_lens_sum=None,
                           batch_size=lambda: bs)


def assign_reference(req_pool_indices, req_to_token, start, end, out_cache_loc, bs):
    """SGLang's ``assign_req_to_token_pool`` in PyTorch: request i's new slots, in batch order,
    into ``req_to_token[row_i, start_i:end_i]``."""
    offset = 0
    rows, starts, ends = (t.tolist()[:bs] for t in (req_pool_indices, start, end))
    for row, s, e in zip(rows, starts, ends):
        req_to_token[row, s:e] = out_cache_loc[offset:offset + e - s].to(req_to_token.dtype)
        offset += e - s
    assert offset == out_cache_loc.numel()


@contextlib.contextmanager
def patched_sglang(block: int, assign=assign_reference):
    """SGLang's ``get_spec()`` answering ``speculative_num_draft_tokens = block`` and its
    ``assign_req_to_token_pool_func`` replaced by ``assign`` (SGLang's Triton kernel does not
    run on CPU), for SGLang's path and Domino's alike."""
    from sglang.srt.mem_cache import allocation
    from sglang.srt.speculative import dflash_info_v2

    from ..sglang_plugin import draft_input

    bag = SimpleNamespace(speculative_num_draft_tokens=block)
    saved = [(m, n, getattr(m, n)) for m, n in
             ((dflash_info_v2, "get_spec"), (draft_input, "get_spec"),
              (allocation, "assign_req_to_token_pool_func"),
              (draft_input, "assign_req_to_token_pool_func"))]
    try:
        dflash_info_v2.get_spec = draft_input.get_spec = lambda: bag
        allocation.assign_req_to_token_pool_func = assign
        draft_input.assign_req_to_token_pool_func = assign
        yield bag
    finally:
        for m, n, v in saved:
            setattr(m, n, v)


def draft_inputs(bs: int, device="cpu"):
    """(SGLang's ``DFlashDraftInputV2``, Domino's ``DominoDraftInputV2``) for ``bs`` requests."""
    from sglang.srt.speculative.dflash_info_v2 import DFlashDraftInputV2

    from ..sglang_plugin.draft_input import DominoDraftInputV2

    z = torch.zeros(bs, dtype=torch.int64, device=device)
    e = torch.empty(bs, 0, device=device)
    stock = DFlashDraftInputV2(topk_p=e, topk_index=e, hidden_states=e, bonus_tokens=z,
                               new_seq_lens=z)
    return stock, DominoDraftInputV2.make(bonus_tokens=z, new_seq_lens=z)
