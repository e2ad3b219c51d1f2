"""Per-kernel ops: ``<op>_ref`` delegates to the executable spec in ``domino_sglang.core`` (never a
second reference) and ``<op>(..., impl="auto")`` dispatches explicitly: "triton" on CUDA tensors,
"ref" otherwise. Kernel modules (and triton) are imported only when a Triton impl runs."""


def resolve_impl(impl: str, device) -> str:
    """"auto" -> "triton" on CUDA, "ref" elsewhere; "triton"/"ref" pass through."""
    import torch

    if impl not in ("auto", "triton", "ref"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'ref', got {impl!r}")
    if impl == "auto":
        return "triton" if torch.device(device).type == "cuda" else "ref"
    return impl
