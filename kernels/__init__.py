"""Triton kernels of domino-sglang (installed as ``domino_sglang.kernels``).

One file per op; each launcher ``<op>_triton`` has the contract of ``domino_sglang.ops.<op>``'s
reference. Importing this package imports no kernel module (and so no triton)."""
