"""Domino serving options that SGLang's CLI cannot carry (no SGLang import here).

``ServerArgs.from_cli_args`` drops unknown flags, so Domino-specific settings come from
(highest priority first):

1. environment variables of the server process: ``DOMINO_TREE_TOPK``, ``DOMINO_TREE_BUDGET``,
   and the head options below (environment only);
2. keys of the draft checkpoint's ``config.json`` ``dflash_config`` section: ``tree_topk``,
   ``tree_budget``.

``tree_topk`` 1 (the default) is chain mode: one proposal per block position. ``tree_topk`` in
[2, 8] selects the EXPERIMENTAL tree mode (docs/tree_mode.md; greedy-lossless on the H200) and
then needs ``tree_budget``: at most that many nodes (root included) per request, in [2, 64]. The verify
width is ``N = core.tree.tree_num_nodes(B, topk, budget) = min(budget, 1 + (B-1)*topk)`` for the
draft block size B; ``budget >= B`` (so N >= B) is checked once B is resolved
(``validate.resolve_tree_widths``). The limits 8 / 64 are the largest shapes the tree kernel
(``kernels/tree_build.py``: TOPK and N are compile-time constants, candidates padded to
next_pow2(topk)^2) is tested at (``tests/ops/test_tree_build.py::test_tree_build_gpu_64_nodes``).

Head options (read by :func:`parse_head_options`; see ``sglang_plugin.head``):

* ``DOMINO_HEAD_IMPL``: ``auto`` (default: the fused Triton head on CUDA when it passes its
  start-up self-check against the spec, else the PyTorch head), ``triton`` (the fused head or a
  start-up error), ``torch`` (the PyTorch head). ``ops`` is an old alias of ``triton``. At
  ``--tp-size`` >= 2 only the PyTorch head runs (over the vocabulary shard, docs/tp.md):
  ``auto`` picks it and ``triton`` is refused.
* ``DOMINO_HEAD_GI_TABLE`` (Triton head only): the GRU input table ``E_ih = embed @ W_ih^T``
  [V, 3G] built once at load. ``fp32`` (default; exact vs the spec up to summation order;
  V x 3G x 4 bytes = 1.9 GB at Qwen3-8B with G=1024), ``bf16`` (half of that; rounded once, so
  proposals may differ from the spec on near ties), ``none`` (no table: every GRU step reads
  W_ih [3G, D] instead; exact, a little slower).
* ``DOMINO_HEAD_BASE_LOGITS`` (Triton head only): dtype of the preallocated base-logits buffer
  [max_bs * B, V] (``lm_head`` GEMM output). ``fp32`` (default; bf16 GEMM with fp32 output on
  CUDA, as the spec computes them; max_bs x B x V x 4 bytes, 0.6 GB at max_bs=64, B=16,
  V=151936), ``model`` (the lm_head dtype: half the memory, logits rounded to bf16 as SGLang's
  own greedy draft sampler has them).
* ``DOMINO_HEAD_VARIANT`` (Triton head only, greedy rollouts with a GRU input table): the launch
  sequence of the fused head. ``auto`` (default: ``fused_pdl`` at batch 1 on sm_90+ GPUs,
  ``fused`` elsewhere, ``wide`` above batch 1: the fastest measured on the H200, 0.461 / 0.666 /
  1.373 ms at batch 1 / 16 / 64 at Qwen3-8B shape vs 0.730 / 0.798 / 1.479 for ``default``,
  ``benchmarks/results/kernels_bench_20261129_0806.md``), ``default`` (3 launches per
  step), ``wide``, ``fused``, ``wide_pdl``, ``fused_pdl`` (``kernels/domino_head_fast.py``; the
  ``_pdl`` ones start each launch while its predecessor finishes and load weights before
  waiting on it). All give the same tokens. Timings: ``benchmarks/results/kernels_notes.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config import ConfigError, DrafterConfig
from ..core.tree import tree_num_nodes

HEAD_IMPLS = ("auto", "triton", "torch")
GI_TABLES = ("fp32", "bf16", "none")
BASE_LOGITS = ("fp32", "model")
HEAD_VARIANTS = ("auto", "default", "wide", "fused", "wide_pdl", "fused_pdl")
MAX_TREE_TOPK = 8
MAX_TREE_BUDGET = 64


@dataclass(frozen=True)
class HeadOptions:
    impl: str = "auto"
    gi_table: str = "fp32"
    base_logits: str = "fp32"
    variant: str = "auto"


def parse_head_options(env: Mapping[str, str] | None = None) -> HeadOptions:
    """``DOMINO_HEAD_IMPL`` / ``_GI_TABLE`` / ``_BASE_LOGITS`` / ``_VARIANT`` (unset or
    empty: the default; case-insensitive). Raises :class:`ConfigError` naming the variable."""
    env = os.environ if env is None else env

    def get(name: str, allowed: tuple[str, ...], default: str, aliases=None) -> str:
        raw = env.get(name)
        val = (raw or "").strip().lower() or default
        val = (aliases or {}).get(val, val)
        if val not in allowed:
            raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
        return val

    return HeadOptions(get("DOMINO_HEAD_IMPL", HEAD_IMPLS, "auto", {"ops": "triton"}),
                       get("DOMINO_HEAD_GI_TABLE", GI_TABLES, "fp32"),
                       get("DOMINO_HEAD_BASE_LOGITS", BASE_LOGITS, "fp32"),
                       get("DOMINO_HEAD_VARIANT", HEAD_VARIANTS, "auto"))


@dataclass(frozen=True)
class DominoServeOptions:
    tree_topk: int = 1
    tree_budget: int | None = None
    head_impl: str = "auto"
    head_gi_table: str = "fp32"
    head_base_logits: str = "fp32"
    # where tree_topk / tree_budget came from (for messages): an env var or a dflash_config key
    topk_source: str = field(default="DOMINO_TREE_TOPK", compare=False)
    budget_source: str = field(default="DOMINO_TREE_BUDGET", compare=False)
    # resolved with the drafter config: only then can the topk/budget pair be judged (one half
    # may come from the environment, the other from dflash_config)
    with_drafter: bool = field(default=True, compare=False)

    @property
    def tree_mode(self) -> bool:
        return self.tree_topk > 1

    def tree_nodes(self, block_size: int) -> int:
        """N, the verify width of tree mode for draft block size ``block_size``."""
        if not self.tree_mode or self.tree_budget is None:
            raise ValueError("tree_nodes: not in tree mode")
        return tree_num_nodes(int(block_size), self.tree_topk, self.tree_budget)

    @classmethod
    def resolve(cls, drafter: DrafterConfig | None = None,
                env: Mapping[str, str] | None = None) -> "DominoServeOptions":
        env = os.environ if env is None else env
        extra: dict[str, Any] = dict(drafter.dflash_config.model_extra or {}) if drafter else {}

        def pick(env_name: str, key: str):
            raw = env.get(env_name)
            if raw is not None and raw.strip() != "":
                try:
                    return int(raw), env_name
                except ValueError:
                    raise ConfigError(f"{env_name}={raw!r}: expected an integer") from None
            if extra.get(key) is not None:
                val = extra[key]
                if not isinstance(val, int) or isinstance(val, bool):
                    raise ConfigError(f"dflash_config.{key}={val!r}: expected an integer")
                return val, f"dflash_config.{key}"
            return None, None

        topk, topk_src = pick("DOMINO_TREE_TOPK", "tree_topk")
        budget, budget_src = pick("DOMINO_TREE_BUDGET", "tree_budget")
        if topk is None:
            topk = 1
        if topk < 1:
            raise ConfigError(f"{topk_src}={topk}: must be >= 1 (1 = chain mode)")
        if topk > MAX_TREE_TOPK:
            raise ConfigError(f"{topk_src}={topk}: tree mode supports tree_topk in [2, "
                              f"{MAX_TREE_TOPK}] (the largest branching the tree kernel is "
                              "tested at)")
        if budget is not None and budget < 2:
            raise ConfigError(f"{budget_src}={budget}: must be >= 2 (the root plus one node)")
        if budget is not None and budget > MAX_TREE_BUDGET:
            raise ConfigError(f"{budget_src}={budget}: tree mode supports at most "
                              f"{MAX_TREE_BUDGET} nodes per request (the largest tree the "
                              "tree kernel is tested at)")
        head = parse_head_options(env)
        return cls(tree_topk=topk, tree_budget=budget, head_impl=head.impl,
                   head_gi_table=head.gi_table, head_base_logits=head.base_logits,
                   topk_source=topk_src or "DOMINO_TREE_TOPK",
                   budget_source=budget_src or "DOMINO_TREE_BUDGET",
                   with_drafter=drafter is not None)

    def check_supported(self) -> None:
        """The tree options must come as a pair: ``tree_topk`` >= 2 needs ``tree_budget``, and
        ``tree_budget`` alone (chain mode) is refused. The checks that need the block size
        (``budget >= B``) are in ``validate.resolve_tree_widths``. Options resolved without the
        drafter config (``DominoWorkerV2.__init__``: environment only) are not judged as a pair:
        the other half may be in ``dflash_config`` (server-argument resolution, the factory and
        the tree worker resolve with the drafter)."""
        if not self.with_drafter:
            return
        if self.tree_mode and self.tree_budget is None:
            raise ConfigError(
                f"{self.topk_source}={self.tree_topk} asks for the experimental tree mode, "
                "which needs a node budget: set DOMINO_TREE_BUDGET (or dflash_config."
                f"tree_budget) to N with block size <= N <= {MAX_TREE_BUDGET}, or unset "
                "DOMINO_TREE_TOPK / set it to 1 for chain mode (see docs/tree_mode.md)")
        if not self.tree_mode and self.tree_budget is not None:
            raise ConfigError(
                f"{self.budget_source}={self.tree_budget} only applies to tree mode "
                f"(tree_topk >= 2, DOMINO_TREE_TOPK / dflash_config.tree_topk), but tree_topk="
                f"{self.tree_topk}: unset it, or set DOMINO_TREE_TOPK in [2, {MAX_TREE_TOPK}]")
