"""Shared by the sharded-head tests: a collective counter for the ranks, a token comparison."""

import torch.distributed as dist

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single",
               "all_gather_object", "broadcast", "broadcast_object_list", "reduce",
               "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
               "gather", "scatter", "barrier", "send", "recv", "isend", "irecv",
               "batch_isend_irecv")


def count_collectives(calls: list) -> None:
    """Wrap every torch.distributed collective so each call appends its name to ``calls``;
    nested calls (one API forwarding to another) count once."""
    depth = [0]

    def wrap(name, fn):
        def counted(*args, **kwargs):
            if depth[0] == 0:
                calls.append(name)
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
        return counted

    for name in COLLECTIVES:
        if hasattr(dist, name):
            setattr(dist, name, wrap(name, getattr(dist, name)))


def assert_same_tokens(got, want, label: str, vocab: int) -> None:
    """Sharded proposals [B, K-1] equal the reference's; no padding row ever wins."""
    bad = (got != want).nonzero().tolist()
    assert not bad, (f"{label}: {len(bad)} proposals differ, first at [b, i]={bad[0]}: sharded "
                     f"{got[tuple(bad[0])].item()} vs reference {want[tuple(bad[0])].item()}")
    assert int(got.max()) < vocab, f"{label}: a padding row won"


def planted_tie_problem(gen, B: int, K: int, D: int, V: int, R: int, tied: tuple):
    """Dyadic hidden [B, K, D], lm_head / embed [V, D] and a one-hot-per-row W2 [V, R] (exact in
    any summation order), with the rows of each group in ``tied`` made identical and dominant on
    dim 0, so that they tie for the argmax across shard edges."""
    import torch

    def dyadic(*shape, lo=-4, hi=4, scale=8):
        return torch.randint(lo, hi + 1, shape, generator=gen).float() / scale

    hidden = dyadic(B, K, D, scale=4)
    hidden[..., 0] = 2.0  # the tied rows have a large weight on dim 0: they contend
    lm_head, embed = dyadic(V, D), dyadic(V, D)
    w2 = torch.zeros(V, R)
    w2[torch.arange(V), torch.randint(0, R, (V,), generator=gen)] = dyadic(V, lo=-8, hi=8,
                                                                          scale=4)
    for group in tied:
        lm_head[list(group)] = lm_head[group[0]].clone()
        lm_head[list(group), 0] = 4.0
        w2[list(group)] = w2[group[0]].clone()
    return hidden, lm_head, embed, w2
