"""Developer switches from the environment: the ONE module of the plugin that reads it.

Everything a user sets goes through SGLang's flags and the drafter's ``config.json``
(``serve_config.DominoServeConfig``, docs/serve_config.md). What is left here is for
developers and benchmarks, read once, in the launcher, by :func:`read_developer_switches`
(``validate.validate_server_args``) and folded into the frozen serve configuration that
reaches the scheduler processes inside ``ServerArgs``; the workers never read the environment.
The exception is :func:`allow_any_sglang_version`, read by ``register()`` before any server
argument exists.

No SGLang import here.

Switches (unset or empty: the default; case-insensitive):

* ``DOMINO_HEAD_IMPL``: ``auto`` (default: the fused Triton head on CUDA when it passes its
  start-up self-check against the spec, else the PyTorch head), ``triton`` (the fused head or a
  start-up error), ``torch`` (the PyTorch head). ``ops`` is an old alias of ``triton``. At
  ``--tp-size`` >= 2 only the PyTorch head runs (over the vocabulary shard, docs/tp.md):
  ``auto`` picks it and ``triton`` is refused.
* ``DOMINO_HEAD_GI_TABLE`` (Triton head and tree mode's tree build): the GRU input table
  ``E_ih = embed @ W_ih^T`` [V, 3G] built once at load. ``fp32`` (default; exact vs the spec
  up to summation order; V x 3G x 4 bytes = 1.9 GB at Qwen3-8B with G=1024), ``bf16`` (half of
  that; rounded once, so proposals may differ from the spec on near ties), ``none`` (no table:
  every GRU step reads W_ih [3G, D] instead; exact, slower). Measured on an H100 at Qwen3-8B
  shape (head alone, batch 1 / 64): fp32 0.641 / 1.403 ms, bf16 0.641 / 1.395 ms (3 of 960
  proposals differ from the spec at batch 64), none 1.092 / 1.933 ms (docs/serve_config.md,
  "Memory").
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
  step), ``wide``, ``fused``, ``fused_pdl`` (``kernels/domino_head_fast.py``; the
  ``_pdl`` ones start each launch while its predecessor finishes and load weights before
  waiting on it). All give the same tokens. Timings: ``benchmarks/results/kernels_notes.md``.
* ``DOMINO_SAMPLED_VERIFY``: ``domino`` (default; chain mode verifies sampled requests with
  ``sampled_verify.domino_sampled_accept``) or ``sglang`` (SGLang's own);
  ``planted-wrong-residual`` is a deliberately WRONG verifier (on rejection the next token is
  drawn from the target distribution without removing the rejected draft; with sampled drafts,
  from the drafts' q instead of the residual), for power checks of the sampled-losslessness
  tests only (``benchmarks/sampled_gpu.py``); logged as an error.
* ``DOMINO_ADAPTIVE``: ``1`` (default) lets a chain-mode server pick the verify width per
  round (batch-adaptive speculation, docs/serve_config.md); ``0`` verifies the whole block
  every round (the fixed-width server of earlier releases). A ``--speculative-adaptive-config``
  whose slots list one candidate does the same per batch size.
* ``DOMINO_SAMPLED_DRAFTS``: ``1`` makes a chain-mode server (``--tp-size 1``) draft sampled
  requests from the head's own distribution and verify them with it (``sampled_draft``): more
  accepted drafts at T > 0, same output distribution. ``0`` (default for now: not yet measured
  on a GPU) drafts the argmax and verifies it as a point mass.
* ``DOMINO_ADAPTIVE_TRACE=PATH``: the adaptive chain server appends one JSON line per decode
  round to PATH (batch size, width, the round's measured period and forward time, whether it
  counted as steady, rounds since the last width switch): the raw data behind the policy's
  cost estimates, for diagnosis (benchmarks/adaptive_trace.py summarises it). Off by default.
* ``DOMINO_ALLOW_QUANTIZED=1``: silence the start-up warning for ``--quantization`` (the worker
  still refuses a quantized target ``lm_head``).
* ``DOMINO_SGLANG_ANY_VERSION=1``: register on an SGLang other than 0.5.17.
* ``DOMINO_TREE_TOPK`` / ``DOMINO_TREE_BUDGET``: DEPRECATED, mapped once (with a warning) to
  ``--speculative-eagle-topk`` / ``--speculative-num-draft-tokens``; the flags win.

SGLang's own knobs that the serve configuration records (read here so the plugin has one
reader; SGLang reads them itself too): ``SGLANG_SIMULATE_ACC_LEN`` (> 0: simulated acceptance,
benchmarks only), ``SGLANG_SIMULATE_ACC_METHOD``, ``SGLANG_SIMULATE_ACC_TOKEN_MODE``, and
``SGLANG_DFLASH_EAGER_DRAFT_SAMPLER`` (keep the draft head out of the draft CUDA graph).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from ..config import ConfigError

HEAD_IMPLS = ("auto", "triton", "torch")
GI_TABLES = ("fp32", "bf16", "none")
BASE_LOGITS = ("fp32", "model")
HEAD_VARIANTS = ("auto", "default", "wide", "fused", "fused_pdl")
SAMPLED_VERIFY = ("domino", "sglang", "planted-wrong-residual")
# SGLang 0.5.17 (speculative/spec_utils.py _sample_simulated_acc_len, dflash_worker_v2.py:1811)
SIMULATE_ACC_METHODS = ("match-expected", "multinomial")
SIMULATE_ACC_TOKEN_MODES = ("fixed", "real-draft-token")
_TRUE = ("1", "true", "yes", "y")
_FALSE = ("0", "false", "no", "n")


@dataclass(frozen=True)
class HeadOptions:
    """The draft-head implementation switches (``head.resolve_head_impl``)."""

    impl: str = "auto"
    gi_table: str = "fp32"
    base_logits: str = "fp32"
    variant: str = "auto"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str,
            aliases: Mapping[str, str] | None = None) -> str:
    raw = env.get(name)
    val = (raw or "").strip().lower() or default
    val = (aliases or {}).get(val, val)
    if val not in allowed:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
    return val


def _exact_choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """SGLang's own string knobs: compared as SGLang compares them (case-sensitive; unset or
    empty is SGLang's default, ``allowed[0]``)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return allowed[0]
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r}: SGLang 0.5.17 accepts {', '.join(allowed)}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("",) + _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ConfigError(f"{name}={env.get(name)!r}: expected a boolean (1/0, true/false)")


def parse_head_options(env: Mapping[str, str] | None = None) -> HeadOptions:
    """``DOMINO_HEAD_IMPL`` / ``_GI_TABLE`` / ``_BASE_LOGITS`` / ``_VARIANT`` from ``env``
    (default: the process environment). Raises :class:`ConfigError` naming the variable."""
    env = _env(env)
    return HeadOptions(_choice(env, "DOMINO_HEAD_IMPL", HEAD_IMPLS, "auto", {"ops": "triton"}),
                       _choice(env, "DOMINO_HEAD_GI_TABLE", GI_TABLES, "fp32"),
                       _choice(env, "DOMINO_HEAD_BASE_LOGITS", BASE_LOGITS, "fp32"),
                       _choice(env, "DOMINO_HEAD_VARIANT", HEAD_VARIANTS, "auto"))


def parse_sampled_verify(env: Mapping[str, str] | None = None) -> str:
    """``DOMINO_SAMPLED_VERIFY``: ``domino`` (default), ``sglang``, or the planted bug
    ``planted-wrong-residual`` (power checks only)."""
    try:
        return _choice(_env(env), "DOMINO_SAMPLED_VERIFY", SAMPLED_VERIFY, "domino")
    except ConfigError as exc:
        raise ValueError(str(exc).replace("expected one of domino, sglang, planted-wrong-residual",
                                          "expected 'domino' (default), 'sglang' or "
                                          "'planted-wrong-residual' (power checks only)")) from None


def allow_any_sglang_version(env: Mapping[str, str] | None = None) -> bool:
    """``DOMINO_SGLANG_ANY_VERSION=1``: try an unsupported SGLang anyway."""
    return _env(env).get("DOMINO_SGLANG_ANY_VERSION") == "1"


@dataclass(frozen=True)
class DeveloperSwitches:
    """Every environment switch the serve configuration takes, parsed and checked."""

    head: HeadOptions = HeadOptions()
    sampled_verify: str = "domino"
    allow_quantized: bool = False
    eager_draft_sampler: bool = False
    adaptive: bool = True
    adaptive_trace: str | None = None  # DOMINO_ADAPTIVE_TRACE (a file path)
    sampled_drafts: bool = False  # DOMINO_SAMPLED_DRAFTS
    # SGLANG_SIMULATE_ACC_LEN (<= 0: off), _METHOD, _TOKEN_MODE
    simulate_acc_len: float = -1.0
    simulate_acc_method: str = "match-expected"
    simulate_acc_token_mode: str = "fixed"
    # deprecated DOMINO_TREE_TOPK / DOMINO_TREE_BUDGET (None: unset)
    legacy_tree_topk: int | None = None
    legacy_tree_budget: int | None = None


def _legacy_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None


def read_developer_switches(env: Mapping[str, str] | None = None) -> DeveloperSwitches:
    """Parse every switch of the module doc from ``env`` (default: the process environment).
    Raises :class:`ConfigError` naming the variable and its value."""
    env = _env(env)
    raw_sim = env.get("SGLANG_SIMULATE_ACC_LEN")
    sim = -1.0
    if raw_sim is not None and raw_sim.strip() != "":
        try:
            sim = float(raw_sim)
        except ValueError:
            raise ConfigError(f"SGLANG_SIMULATE_ACC_LEN={raw_sim!r}: expected a number (> 0 "
                              "turns simulated acceptance on, <= 0 or unset is off)") from None
    try:
        sampled = parse_sampled_verify(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return DeveloperSwitches(
        head=parse_head_options(env), sampled_verify=sampled,
        allow_quantized=env.get("DOMINO_ALLOW_QUANTIZED") == "1",
        eager_draft_sampler=_flag(env, "SGLANG_DFLASH_EAGER_DRAFT_SAMPLER"),
        adaptive=_flag(env, "DOMINO_ADAPTIVE") if (env.get("DOMINO_ADAPTIVE") or "").strip()
        else True,
        adaptive_trace=(env.get("DOMINO_ADAPTIVE_TRACE") or "").strip() or None,
        sampled_drafts=_flag(env, "DOMINO_SAMPLED_DRAFTS"),
        simulate_acc_len=sim,
        simulate_acc_method=_exact_choice(env, "SGLANG_SIMULATE_ACC_METHOD",
                                          SIMULATE_ACC_METHODS),
        simulate_acc_token_mode=_exact_choice(env, "SGLANG_SIMULATE_ACC_TOKEN_MODE",
                                              SIMULATE_ACC_TOKEN_MODES),
        legacy_tree_topk=_legacy_int(env, "DOMINO_TREE_TOPK"),
        legacy_tree_budget=_legacy_int(env, "DOMINO_TREE_BUDGET"))
