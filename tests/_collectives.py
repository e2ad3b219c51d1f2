"""Count torch.distributed collectives in a test rank (shared by the sharded-head tests)."""

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
