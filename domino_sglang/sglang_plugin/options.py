"""Domino serving options that SGLang's CLI cannot carry (no SGLang import here).

``ServerArgs.from_cli_args`` drops unknown flags, so Domino-specific settings come from
(highest priority first):

1. environment variables of the server process: ``DOMINO_TREE_TOPK``, ``DOMINO_TREE_BUDGET``,
   ``DOMINO_HEAD_IMPL`` (``auto``/``torch``/``ops``);
2. keys of the draft checkpoint's ``config.json`` ``dflash_config`` section: ``tree_topk``,
   ``tree_budget``.

``tree_topk`` 1 (the default) is chain mode: one proposal per block position. ``tree_topk > 1``
asks for tree mode with at most ``tree_budget`` nodes (root included) per request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import ConfigError, DrafterConfig


@dataclass(frozen=True)
class DominoServeOptions:
    tree_topk: int = 1
    tree_budget: int | None = None
    head_impl: str = "auto"

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
        impl = env.get("DOMINO_HEAD_IMPL", "auto").strip().lower() or "auto"
        if impl not in ("auto", "torch", "ops"):
            raise ConfigError(f"DOMINO_HEAD_IMPL={impl!r}: expected auto, torch or ops")
        return cls(tree_topk=topk, tree_budget=budget, head_impl=impl)

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
