"""``DominoServeConfig``: the one frozen serve configuration of a Domino server.

Resolved ONCE, in the launcher, by ``validate.validate_server_args`` (SGLang's
``algo.validate_server_args`` hook, which runs before DFLASH's ``_handle_dflash`` overwrites
``--speculative-eagle-topk`` and before ``_maybe_disable_adaptive`` clears
``--speculative-adaptive``) from

* SGLang's own flags: ``--speculative-eagle-topk`` (tree branching; 1 or unset = chain),
  ``--speculative-num-draft-tokens`` (chain: the block; tree: the node budget, as EAGLE trees),
  ``--speculative-dflash-block-size`` (the draft block B), ``--tp-size``,
  ``--speculative-adaptive`` + ``--speculative-adaptive-config``;
* the drafter's ``config.json`` (``block_size``; ``dflash_config.tree_topk`` /
  ``tree_budget`` as drafter defaults: flags win);
* the developer switches of :mod:`.options` (the one module that reads the environment).

It is stored on the ``ServerArgs`` object under :data:`CONFIG_ATTR`. ``ServerArgs`` reach the
scheduler processes pickled (and the draft worker gets a ``deepcopy``): both keep instance
attributes that are not dataclass fields (tested in tests/sglang_plugin/test_serve_config.py),
so every process reads the same object; nothing is re-resolved from the environment there. It
is a plain frozen dataclass of builtins (no pydantic model) because the scheduler sends
``vars(server_args)`` through msgpack for ``/server_info`` (``Scheduler.get_internal_state``,
``msgspec_to_builtins`` expands dataclasses, not pydantic models): the resolved Domino
configuration is therefore visible in ``/server_info`` under ``internal_states[i]
["_domino_serve_config"]``.

Readers: :func:`serve_config_of` (explicit ``server_args``: ``DominoSpecAlgo.handle_server_args``,
the worker factory, the workers) and :func:`current_serve_config` (the ``ServerArgs`` SGLang
published in the process's runtime context, for the two SGLang call-backs that get no
``server_args``: ``get_num_tokens_per_req_for_target_verify`` and the tree mask-policy hook).
docs/serve_config.md lists every field and where it comes from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import ConfigError, DrafterConfig
from ..core.tree import tree_num_nodes
from .options import (SAMPLED_VERIFY, SIMULATE_ACC_METHODS, SIMULATE_ACC_TOKEN_MODES,
                      DeveloperSwitches, HeadOptions)

logger = logging.getLogger(__name__)

CONFIG_ATTR = "_domino_serve_config"
# the largest shapes the tree kernel (kernels/tree_build.py: TOPK and N are compile-time
# constants, candidates padded to next_pow2(topk)^2) is tested at
# (tests/ops/test_tree_build.py::test_tree_build_gpu_64_nodes)
MAX_TREE_TOPK = 8
MAX_TREE_BUDGET = 64
TOPK_FLAG = "--speculative-eagle-topk"
BUDGET_FLAG = "--speculative-num-draft-tokens"
BLOCK_FLAG = "--speculative-dflash-block-size"


def show_setting(source: str, value: Any) -> str:
    """``--flag value`` for a flag, ``NAME=value`` for a variable or a config key."""
    return f"{source} {value}" if source.startswith("--") else f"{source}={value}"


@dataclass(frozen=True)
class SimulatedAcceptance:
    """SGLang's benchmark knob ``SGLANG_SIMULATE_ACC_LEN`` (> 0), as DFlash applies it after
    verification (``dflash_worker_v2.py:1810``, ``dflash_utils.apply_dflash_simulated_acceptance``):
    every round commits a forced length drawn around ``acc_len`` (``method``), with fixed token
    ids (``token_mode="fixed"``) or the real drafts + target bonus (``"real-draft-token"``).
    OUTPUTS ARE NOT LOSSLESS: throughput numbers at a chosen tau, nothing else."""

    acc_len: float
    method: str = "match-expected"
    token_mode: str = "fixed"

    def __post_init__(self):
        if not self.acc_len > 0:
            raise ValueError(f"SimulatedAcceptance.acc_len={self.acc_len}: must be > 0")
        if self.method not in SIMULATE_ACC_METHODS:
            raise ValueError(f"SimulatedAcceptance.method={self.method!r}")
        if self.token_mode not in SIMULATE_ACC_TOKEN_MODES:
            raise ValueError(f"SimulatedAcceptance.token_mode={self.token_mode!r}")


# SGLang 0.5.17 AdaptiveStepSlot defaults (speculative/adaptive_spec_params.py)
_ADAPTIVE_KNOBS = {"ema_alpha": 0.2, "update_interval": 5, "warmup_batches": 10,
                   "down_hysteresis": -0.25, "up_hysteresis": 0.0, "ceiling_coeff": 0}
_ADAPTIVE_INT_KNOBS = ("update_interval", "warmup_batches")


@dataclass(frozen=True)
class AdaptiveSlot:
    """One batch-size slot of an adaptive policy (SGLang's JSON entry ``"<bs>": {...}``).

    ``candidate_steps``: the speculation depths the runtime may pick for batches of about
    ``batch_size`` requests, sorted and unique. For Domino chain mode a step count ``s`` means
    ``s`` proposals per round, i.e. verify blocks of ``s + 1`` tokens (as ``--speculative-num-
    draft-tokens = steps + 1`` for EAGLE); ``0`` means no speculation (plain decoding).
    The hysteresis knobs keep SGLang's names, meaning and defaults."""

    batch_size: int
    candidate_steps: tuple[int, ...]
    ema_alpha: float = 0.2
    update_interval: int = 5
    warmup_batches: int = 10
    down_hysteresis: float = -0.25
    up_hysteresis: float = 0.0
    ceiling_coeff: float = 0


@dataclass(frozen=True)
class AdaptivePolicy:
    """Batch-adaptive verify width (chain mode): the candidate widths per batch-size slot, in
    SGLang's ``--speculative-adaptive-config`` terms (``candidate_steps``: a step count ``s``
    verifies ``s + 1`` tokens; 0 = no speculation). ``source``: the JSON path, or
    ``"domino-default"`` (every batch size: B, B/2, B/4 tokens and no speculation; the
    worker's measured rates choose, ``core.adaptive``). ``enabled`` False: ``DOMINO_ADAPTIVE=0``
    (every round verifies the block)."""

    source: str
    slots: tuple[AdaptiveSlot, ...]
    enabled: bool = True

    @property
    def candidate_steps(self) -> tuple[int, ...]:
        """The union over slots (what sizes the runtime's buffers in SGLang)."""
        return tuple(sorted({s for slot in self.slots for s in slot.candidate_steps}))


@dataclass(frozen=True)
class DominoServeConfig:
    """The resolved configuration of one Domino server (frozen; unknown fields are a
    ``TypeError``, as every dataclass).

    Widths: ``block_size`` is B, the draft block (``[bonus, MASK x (B-1)]``, B-1 proposals);
    ``num_verify_tokens`` is N, the target verify width per request (``speculative_num_draft_
    tokens`` after resolution): N = B in chain mode, ``min(tree_budget, 1 + (B-1) * tree_topk)``
    in tree mode. ``drafter_block_size`` is the block the drafter was trained with (B <= it).
    ``*_source`` name where a value came from (a flag, a variable, a ``dflash_config`` key or
    ``"default"``), for messages.
    """

    block_size: int
    num_verify_tokens: int
    drafter_block_size: int
    tree_topk: int = 1
    tree_budget: int | None = None
    topk_source: str = "default"
    budget_source: str = "default"
    tp_size: int = 1
    head: HeadOptions = field(default_factory=HeadOptions)
    sampled_verify: str = "domino"
    eager_draft_sampler: bool = False
    allow_quantized: bool = False
    simulated_acceptance: SimulatedAcceptance | None = None
    adaptive: AdaptivePolicy | None = None
    adaptive_trace: str | None = None  # DOMINO_ADAPTIVE_TRACE: per-round JSON lines
    sampled_drafts: bool = False  # DOMINO_SAMPLED_DRAFTS: q-sampled drafts for sampled requests

    def __post_init__(self):
        b, n = self.block_size, self.num_verify_tokens
        if not 2 <= b <= self.drafter_block_size:
            raise ValueError(f"DominoServeConfig.block_size={b}: must be in [2, "
                             f"drafter_block_size={self.drafter_block_size}]")
        if not 1 <= self.tree_topk <= MAX_TREE_TOPK:
            raise ValueError(f"DominoServeConfig.tree_topk={self.tree_topk}: must be in [1, "
                             f"{MAX_TREE_TOPK}]")
        if self.sampled_verify not in SAMPLED_VERIFY:
            raise ValueError(f"DominoServeConfig.sampled_verify={self.sampled_verify!r}")
        if self.tree_mode:
            if self.tree_budget is None or not b <= self.tree_budget <= MAX_TREE_BUDGET:
                raise ValueError(f"DominoServeConfig.tree_budget={self.tree_budget}: tree mode "
                                 f"needs block_size={b} <= budget <= {MAX_TREE_BUDGET}")
            if n != tree_num_nodes(b, self.tree_topk, self.tree_budget):
                raise ValueError(f"DominoServeConfig.num_verify_tokens={n}: tree mode has N = "
                                 f"{tree_num_nodes(b, self.tree_topk, self.tree_budget)}")
            if self.tp_size != 1 or self.simulated_acceptance is not None:
                raise ValueError("DominoServeConfig: tree mode runs at tp_size 1 without "
                                 "simulated acceptance")
        else:
            if self.tree_budget is not None or n != b:
                raise ValueError(f"DominoServeConfig: chain mode has no tree_budget "
                                 f"({self.tree_budget}) and N == B ({n} vs {b})")
        if self.sampled_drafts and (self.tree_mode or self.tp_size != 1
                                    or self.sampled_verify == "sglang"
                                    or self.simulated_acceptance is not None):
            raise ValueError("DominoServeConfig.sampled_drafts: chain mode at tp_size 1 with "
                             "the project's sampled verify and no simulated acceptance only")

    @property
    def tree_mode(self) -> bool:
        return self.tree_topk > 1

    def describe(self) -> str:
        """One line for the start-up log."""
        mode = (f"tree (topk={self.tree_topk} from {self.topk_source}, budget="
                f"{self.tree_budget} from {self.budget_source})" if self.tree_mode else "chain")
        extra = []
        if self.simulated_acceptance is not None:
            extra.append(f"SIMULATED acceptance {self.simulated_acceptance.acc_len}")
        if self.adaptive is not None:
            extra.append(f"adaptive verify width {'on' if self.adaptive.enabled else 'off'} "
                         f"({self.adaptive.source})")
        if self.sampled_drafts:
            extra.append("sampled drafts for sampled requests (DOMINO_SAMPLED_DRAFTS=1)")
        return (f"domino serve config: {mode}, B={self.block_size}, N={self.num_verify_tokens}"
                f", tp={self.tp_size}, head={self.head.impl}, sampled verify="
                f"{self.sampled_verify}" + "".join(f", {e}" for e in extra))


# ---- resolution ---------------------------------------------------------------------------
def _drafter_int(drafter: DrafterConfig, key: str) -> int | None:
    extra = dict(drafter.dflash_config.model_extra or {})
    val = extra.get(key)
    if val is None:
        return None
    if not isinstance(val, int) or isinstance(val, bool):
        raise ConfigError(f"dflash_config.{key}={val!r}: expected an integer")
    return val


def _pick(flag_value: Any, flag: str, legacy: int | None, legacy_name: str,
          drafter_value: int | None, key: str) -> tuple[int | None, str]:
    """flag > deprecated variable > drafter default."""
    if flag_value is not None:
        if legacy is not None:
            logger.warning("domino: %s is set, so the deprecated %s=%s is ignored (flags win)",
                           show_setting(flag, flag_value), legacy_name, legacy)
        return int(flag_value), flag
    if legacy is not None:
        logger.warning("domino: %s=%s is DEPRECATED: it is mapped to %s %s; pass the flag "
                       "instead (docs/tree_mode.md)", legacy_name, legacy, flag, legacy)
        return legacy, legacy_name
    if drafter_value is not None:
        return drafter_value, f"dflash_config.{key}"
    return None, "default"


def _check_block_flag(flag: str, value: Any, trained: int) -> int | None:
    if value is None:
        return None
    if not 2 <= int(value) <= trained:
        raise ConfigError(f"{flag} {value}: the drafter was trained with block_size={trained}; "
                          f"use a value in [2, {trained}] (or leave it unset to use {trained})")
    return int(value)


def resolve_tree_shape(server_args: Any, drafter: DrafterConfig,
                       switches: DeveloperSwitches) -> dict:
    """B, N, topk and budget (with their sources) from the user's flags, the deprecated
    variables and the drafter's defaults. Raises :class:`ConfigError` naming the flag."""
    sa = server_args
    trained = drafter.resolved_block_size
    flag_topk = getattr(sa, "speculative_eagle_topk", None)
    flag_ndt = getattr(sa, "speculative_num_draft_tokens", None)
    flag_block = _check_block_flag(BLOCK_FLAG, getattr(sa, "speculative_dflash_block_size",
                                                       None), trained)
    topk, topk_src = _pick(flag_topk, TOPK_FLAG, switches.legacy_tree_topk, "DOMINO_TREE_TOPK",
                           _drafter_int(drafter, "tree_topk"), "tree_topk")
    topk = 1 if topk is None else topk
    if topk < 1:
        raise ConfigError(f"{show_setting(topk_src, topk)}: must be >= 1 (1 = chain mode)")
    if topk > MAX_TREE_TOPK:
        raise ConfigError(f"{show_setting(topk_src, topk)}: tree mode supports a branching in [2, "
                          f"{MAX_TREE_TOPK}] (the largest the tree kernel is tested at)")
    if topk == 1:
        legacy_budget = switches.legacy_tree_budget
        if legacy_budget is not None and flag_topk is None:
            raise ConfigError(
                f"DOMINO_TREE_BUDGET={legacy_budget} only applies to tree mode, but the "
                f"branching is 1 ({show_setting(topk_src, topk)}): unset it, or pass {TOPK_FLAG} in "
                f"[2, {MAX_TREE_TOPK}] with {BUDGET_FLAG} N")
        if legacy_budget is not None:
            logger.warning("domino: DOMINO_TREE_BUDGET=%s ignored: %s 1 selects chain mode",
                           legacy_budget, TOPK_FLAG)
        block = flag_block or _check_block_flag(BUDGET_FLAG, flag_ndt, trained) or trained
        return dict(tree_topk=1, tree_budget=None, block_size=block, num_verify_tokens=block,
                    topk_source=topk_src, budget_source="default")
    budget, budget_src = _pick(flag_ndt, BUDGET_FLAG, switches.legacy_tree_budget,
                               "DOMINO_TREE_BUDGET", _drafter_int(drafter, "tree_budget"),
                               "tree_budget")
    if budget is None:
        raise ConfigError(
            f"{show_setting(topk_src, topk)} asks for the experimental tree mode, which needs a node "
            f"budget: pass {BUDGET_FLAG} N (block size <= N <= {MAX_TREE_BUDGET}), or "
            f"{TOPK_FLAG} 1 for chain mode (the deprecated DOMINO_TREE_TOPK / "
            "DOMINO_TREE_BUDGET map to these two flags; docs/tree_mode.md)")
    if budget < 2:
        raise ConfigError(f"{show_setting(budget_src, budget)}: the node budget must be >= 2 (the root "
                          "plus one node)")
    if budget > MAX_TREE_BUDGET:
        raise ConfigError(f"{show_setting(budget_src, budget)}: tree mode supports at most "
                          f"{MAX_TREE_BUDGET} nodes per request (the largest tree the tree "
                          "kernel is tested at)")
    block = flag_block or trained
    if budget < block:
        raise ConfigError(f"{show_setting(budget_src, budget)}: below the draft block size B={block}; "
                          f"tree mode needs B <= budget <= {MAX_TREE_BUDGET} (the B-token draft "
                          f"block is written inside the N-token verify reservation; set B with "
                          f"{BLOCK_FLAG})")
    return dict(tree_topk=topk, tree_budget=budget, block_size=block,
                num_verify_tokens=tree_num_nodes(block, topk, budget), topk_source=topk_src,
                budget_source=budget_src)


def domino_default_adaptive(block_size: int) -> dict:
    """Domino's default policy in SGLang's JSON format: one slot for every batch size with the
    widths B, B/2, B/4 and 1 (no speculation); the measured rates pick among them."""
    from ..core.adaptive import default_slots

    (slot,) = default_slots(block_size)
    return {str(slot.batch_size): {"candidate_steps": [w - 1 for w in slot.widths]}}


def parse_adaptive_policy(path: str | None, block_size: int,
                          default: Mapping[str, Any] | None = None) -> AdaptivePolicy:
    """Parse SGLang's adaptive JSON (``speculative/adaptive_spec_params.py``): an object whose
    integer-string keys (``"1"``, ``"8"``, ...) are batch-size slots, each with
    ``candidate_steps`` (a non-empty list of ints in [0, B-1]) and optional knobs
    ``ema_alpha``, ``update_interval``, ``warmup_batches``, ``down_hysteresis``,
    ``up_hysteresis``, ``ceiling_coeff``. Other top-level keys are ignored, as SGLang does;
    unknown keys inside a slot are refused (a typo would otherwise be silently dropped).
    ``path`` None: ``default`` (Domino's :func:`domino_default_adaptive`)."""
    flag = "--speculative-adaptive-config"
    if path is not None:
        try:
            cfg = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: cannot read it ({exc})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{flag} {path}: not valid JSON ({exc})") from None
        where = f"{flag} {path}"
    else:
        if default is None:
            default = domino_default_adaptive(block_size)
        cfg, where = default, "--speculative-adaptive (Domino's default policy)"
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a JSON object keyed by batch size, got "
                          f"{type(cfg).__name__}")
    slots = []
    for key, entry in cfg.items():
        if not str(key).isdigit():
            continue
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: slot \"{key}\" must be an object")
        unknown = sorted(set(entry) - {"candidate_steps"} - set(_ADAPTIVE_KNOBS))
        if unknown:
            raise ConfigError(f"{where}: slot \"{key}\" has unknown keys {unknown}; allowed: "
                              f"candidate_steps, {', '.join(_ADAPTIVE_KNOBS)}")
        steps = entry.get("candidate_steps")
        if (not isinstance(steps, list) or not steps
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in steps)):
            raise ConfigError(f"{where}: slot \"{key}\" candidate_steps must be a non-empty "
                              f"list of non-negative ints, got {steps!r}")
        too_deep = [s for s in steps if s > block_size - 1]
        if too_deep:
            raise ConfigError(f"{where}: slot \"{key}\" candidate_steps {too_deep} exceed the "
                              f"{block_size - 1} proposals of a block of B={block_size}")
        knobs = {}
        for name, default_value in _ADAPTIVE_KNOBS.items():
            val = entry.get(name, default_value)
            ok = isinstance(val, (int, float)) and not isinstance(val, bool)
            if name in _ADAPTIVE_INT_KNOBS:
                ok = ok and isinstance(val, int) and val >= 0
            if not ok:
                raise ConfigError(f"{where}: slot \"{key}\" {name}={val!r}: expected a "
                                  f"{'non-negative int' if name in _ADAPTIVE_INT_KNOBS else 'number'}")
            knobs[name] = val
        slots.append(AdaptiveSlot(batch_size=int(key),
                                  candidate_steps=tuple(sorted(set(steps))), **knobs))
    if not slots:
        raise ConfigError(f"{where}: needs at least one integer-string batch-size key, e.g. "
                          f"{{\"1\": {{\"candidate_steps\": [1, 3, 7]}}}}; got keys "
                          f"{list(cfg)}")
    return AdaptivePolicy(source=path or "domino-default",
                          slots=tuple(sorted(slots, key=lambda s: s.batch_size)))


def resolve_adaptive(sa: Any, shape: dict, switches: DeveloperSwitches,
                     simulated: bool) -> AdaptivePolicy | None:
    """Chain mode: on by default (Domino's policy, or ``--speculative-adaptive-config``'s);
    ``DOMINO_ADAPTIVE=0`` and simulated acceptance turn it off (``enabled`` False, the reason
    as its ``source``; a requested policy is then ignored with a warning). Tree mode: None,
    and a requested policy is refused. ``--tp-size`` >= 2: off, and a requested policy is
    refused: every rank times its own rounds and would choose its own width, and ranks that
    verify different widths run different collectives (a hang)."""
    asked = bool(getattr(sa, "speculative_adaptive", False))
    path = getattr(sa, "speculative_adaptive_config", None)
    tp = int(getattr(sa, "tp_size", 1) or 1)
    if shape["tree_topk"] > 1:
        if asked or path:
            raise ConfigError(
                f"--speculative-adaptive with tree mode ({show_setting(shape['topk_source'], shape['tree_topk'])}): "
                "the adaptive verify width is chain-only; drop --speculative-adaptive / "
                f"--speculative-adaptive-config, or pass {TOPK_FLAG} 1")
        return None
    policy = parse_adaptive_policy(path, shape["block_size"])
    if tp > 1:
        if asked or path:
            raise ConfigError(
                f"--speculative-adaptive with --tp-size {tp}: the adaptive verify width runs at "
                "--tp-size 1 only (each rank times its own rounds, and ranks that chose "
                "different widths would run different collectives); drop "
                "--speculative-adaptive / --speculative-adaptive-config, or serve with "
                "--tp-size 1")
        logger.info("domino: --tp-size %d: the adaptive verify width is off (every round "
                    "verifies the whole block)", tp)
        return AdaptivePolicy(source=f"--tp-size {tp}", slots=policy.slots, enabled=False)
    if not switches.adaptive:
        if asked or path:
            logger.warning("domino: DOMINO_ADAPTIVE=0 turns the adaptive verify width off; "
                           "--speculative-adaptive / --speculative-adaptive-config ignored")
        return AdaptivePolicy(source="DOMINO_ADAPTIVE=0", slots=policy.slots, enabled=False)
    if simulated:
        logger.warning("domino: simulated acceptance (SGLANG_SIMULATE_ACC_LEN) verifies the "
                       "whole block every round; the adaptive verify width is off")
        return AdaptivePolicy(source="simulated acceptance", slots=policy.slots, enabled=False)
    return policy


def resolve_serve_config(server_args: Any, drafter: DrafterConfig,
                         switches: DeveloperSwitches) -> DominoServeConfig:
    """The serve configuration from the user's (not yet resolved) server arguments. Call it
    before DFLASH's resolution (``validate_server_args``). Raises :class:`ConfigError`."""
    sa = server_args
    shape = resolve_tree_shape(sa, drafter, switches)
    sim = None
    if switches.simulate_acc_len > 0:
        if shape["tree_topk"] > 1:
            raise ConfigError(
                f"SGLANG_SIMULATE_ACC_LEN={switches.simulate_acc_len:g}: simulated acceptance "
                f"is chain-only (DFlash forces it on a chain verify; a tree's accepted path is "
                f"not a prefix of the verify rows); unset it for tree mode "
                f"({show_setting(shape['topk_source'], shape['tree_topk'])})")
        sim = SimulatedAcceptance(switches.simulate_acc_len, switches.simulate_acc_method,
                                  switches.simulate_acc_token_mode)
    adaptive = resolve_adaptive(sa, shape, switches, sim is not None)
    tp = int(getattr(sa, "tp_size", 1) or 1)
    if tp > 1 and shape["tree_topk"] > 1:
        raise ConfigError(
            f"--tp-size {tp} with tree mode ({show_setting(shape['topk_source'], shape['tree_topk'])}): "
            f"the tree build needs the full-vocabulary top-k and runs at --tp-size 1 only; pass "
            f"{TOPK_FLAG} 1 (and unset DOMINO_TREE_TOPK / DOMINO_TREE_BUDGET and the "
            "dflash_config tree keys) for chain mode, or serve the tree with --tp-size 1")
    if tp > 1 and switches.head.impl == "triton":
        raise ConfigError(
            f"DOMINO_HEAD_IMPL=triton with --tp-size {tp}: the fused Triton head runs at "
            "--tp-size 1 only; unset DOMINO_HEAD_IMPL (auto picks the PyTorch head over the "
            "vocabulary shard) or set it to torch")
    if switches.sampled_drafts:
        why = ("tree mode" if shape["tree_topk"] > 1 else f"--tp-size {tp}" if tp > 1 else
               "DOMINO_SAMPLED_VERIFY=sglang (its verify assumes point-mass drafts)"
               if switches.sampled_verify == "sglang" else
               f"SGLANG_SIMULATE_ACC_LEN={switches.simulate_acc_len:g}" if sim is not None
               else None)
        if why is not None:
            raise ConfigError(f"DOMINO_SAMPLED_DRAFTS=1 with {why}: sampled drafting runs in "
                              "chain mode at --tp-size 1 with DOMINO_SAMPLED_VERIFY=domino and "
                              "no simulated acceptance; unset DOMINO_SAMPLED_DRAFTS or change "
                              "that setting")
    return DominoServeConfig(
        **shape, drafter_block_size=drafter.resolved_block_size, tp_size=tp,
        head=switches.head, sampled_verify=switches.sampled_verify,
        eager_draft_sampler=switches.eager_draft_sampler,
        allow_quantized=switches.allow_quantized, simulated_acceptance=sim, adaptive=adaptive,
        adaptive_trace=switches.adaptive_trace, sampled_drafts=switches.sampled_drafts)


# ---- readers ------------------------------------------------------------------------------
class MissingServeConfigError(RuntimeError):
    """``ServerArgs`` without a Domino serve configuration."""


def serve_config_of(server_args: Any) -> DominoServeConfig:
    """The configuration stored on ``server_args`` by ``validate_server_args``."""
    cfg = getattr(server_args, CONFIG_ATTR, None)
    if not isinstance(cfg, DominoServeConfig):
        raise MissingServeConfigError(
            "domino: these ServerArgs carry no Domino serve configuration (ServerArgs."
            f"{CONFIG_ATTR}); they were resolved without the domino plugin's "
            "validate_server_args. Build them with the plugin loaded (sglang.srt.plugins."
            "load_plugins() before ServerArgs / prepare_server_args)")
    return cfg


def store_serve_config(server_args: Any, cfg: DominoServeConfig) -> None:
    # an underscore name: ServerArgs.__setattr__ lets it through after resolution too
    setattr(server_args, CONFIG_ATTR, cfg)


def current_serve_config() -> DominoServeConfig | None:
    """The configuration of the ``ServerArgs`` published in this process's SGLang runtime
    context (``get_context().server_args``), or None (nothing published, or not Domino)."""
    try:
        from sglang.srt.runtime_context import get_context

        sa = get_context().server_args
    except Exception:  # noqa: BLE001 - "Global server args is not set yet!" and the like
        return None
    cfg = getattr(sa, CONFIG_ATTR, None)
    return cfg if isinstance(cfg, DominoServeConfig) else None


__all__ = ["AdaptivePolicy", "AdaptiveSlot", "CONFIG_ATTR", "DominoServeConfig",
           "MAX_TREE_BUDGET", "MAX_TREE_TOPK", "MissingServeConfigError", "SimulatedAcceptance",
           "current_serve_config", "domino_default_adaptive", "parse_adaptive_policy",
           "resolve_adaptive", "resolve_serve_config",
           "resolve_tree_shape", "serve_config_of", "store_serve_config"]
