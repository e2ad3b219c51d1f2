"""Domino serving options that SGLang's CLI cannot carry (no SGLang import here).

``ServerArgs.from_cli_args`` drops unknown flags, so Domino-specific settings come from
(highest priority first):

1. environment variables of the server process: ``DOMINO_TREE_TOPK``, ``DOMINO_TREE_BUDGET``,
   and the head options below (environment only);
2. keys of the draft checkpoint's ``config.json`` ``dflash_config`` section: ``tree_topk``,
   ``tree_budget``.

``tree_topk`` 1 (the default) is chain mode: one proposal per block position. ``tree_topk > 1``
asks for tree mode with at most ``tree_budget`` nodes (root included) per request.

Head options (read by :func:`parse_head_options`; see ``sglang_plugin.head``):

* ``DOMINO_HEAD_IMPL``: ``auto`` (default: the fused Triton head on CUDA when it passes its
  start-up self-check against the spec, else the PyTorch head), ``triton`` (the fused head or a
  start-up error), ``torch`` (the PyTorch head). ``ops`` is an old alias of ``triton``.
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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import ConfigError, DrafterConfig

HEAD_IMPLS = ("auto", "triton", "torch")
GI_TABLES = ("fp32", "bf16", "none")
BASE_LOGITS = ("fp32", "model")


@dataclass(frozen=True)
class HeadOptions:
    impl: str = "auto"
    gi_table: str = "fp32"
    base_logits: str = "fp32"


def parse_head_options(env: Mapping[str, str] | None = None) -> HeadOptions:
    """``DOMINO_HEAD_IMPL`` / ``DOMINO_HEAD_GI_TABLE`` / ``DOMINO_HEAD_BASE_LOGITS`` (unset or
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
                       get("DOMINO_HEAD_BASE_LOGITS", BASE_LOGITS, "fp32"))


@dataclass(frozen=True)
class DominoServeOptions:
    tree_topk: int = 1
    tree_budget: int | None = None
    head_impl: str = "auto"
    head_gi_table: str = "fp32"
    head_base_logits: str = "fp32"

    @property
    def tree_mode(self) -> bool:
        return self.tree_topk > 1

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
        if budget is not None and budget < 2:
            raise ConfigError(f"{budget_src}={budget}: must be >= 2 (the root plus one node)")
        head = parse_head_options(env)
        return cls(tree_topk=topk, tree_budget=budget, head_impl=head.impl,
                   head_gi_table=head.gi_table, head_base_logits=head.base_logits)

    def check_supported(self) -> None:
        """Tree verification is not wired into the SGLang worker yet: refuse it clearly."""
        if self.tree_mode:
            raise ConfigError(
                f"tree_topk={self.tree_topk} (DOMINO_TREE_TOPK / dflash_config.tree_topk): "
                "Domino tree mode is not implemented in the SGLang 0.5.17 plugin yet; serve in "
                "chain mode (unset DOMINO_TREE_TOPK or set it to 1). The tree references live "
                "in domino_sglang.spec (build_tree_ref, tree_verify_*_ref).")
        if self.tree_budget is not None:
            raise ConfigError(
                f"tree_budget={self.tree_budget} (DOMINO_TREE_BUDGET / "
                "dflash_config.tree_budget) only applies to tree mode (tree_topk > 1), which is "
                "not implemented yet; unset it")
