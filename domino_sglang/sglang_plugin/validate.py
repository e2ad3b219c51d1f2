"""Server-argument checks for ``--speculative-algorithm domino`` (checked against SGLang 0.5.17).

Two stages, both raising :class:`DominoServerArgsError` (a ``ValueError``) whose message names
the flag, variable or config field and its value:

* :func:`validate_server_args` runs *before* SGLang resolves the speculative arguments
  (``speculative_hook.py:129``, before DFLASH's handler forces ``speculative_eagle_topk = 1``
  and before ``--speculative-adaptive`` is switched off for non-EAGLE algorithms): options
  Domino never supports, the drafter checkpoint itself (``DrafterConfig``) against the target
  (``check_against_target``), and the ONE resolution of the serve configuration
  (``serve_config.resolve_serve_config``: tree shape from ``--speculative-eagle-topk`` /
  ``--speculative-num-draft-tokens`` / ``--speculative-dflash-block-size``, developer switches,
  simulated acceptance, the adaptive policy), stored on the ``ServerArgs``.
* :func:`check_resolved_server_args` runs *after* ``_handle_dflash``
  (``DominoSpecAlgo.handle_server_args``): the resolved widths equal the configuration's.

Tensor parallel (``--tp-size`` >= 2, docs/tp.md): chain mode only, with the PyTorch head
(refused in ``resolve_serve_config``: tree mode, ``DOMINO_HEAD_IMPL=triton``).

Tree mode (EXPERIMENTAL, ``--speculative-eagle-topk`` >= 2 + ``--speculative-num-draft-tokens``
N, docs/tree_mode.md): :func:`check_tree_server_args` refuses, before resolution, what the tree
worker cannot serve (target attention other than triton/flashinfer, page size > 1, a draft
window, a grammar backend, Mamba/hybrid targets; simulated acceptance is refused by the
configuration itself). It reads the resolving configuration through SGLang's ``resolved_view``
(page size and attention backends are declared, not yet written, while the speculative hook
runs).

SGLang is imported lazily (``get_config`` to read the target config).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import ConfigError, DrafterConfig
from .options import read_developer_switches
from .serve_config import (CONFIG_ATTR, DominoServeConfig, resolve_serve_config,
                           serve_config_of, store_serve_config)
from .warmup import default_warmups

logger = logging.getLogger(__name__)

_SUPPORTED_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# Target attention backends whose TARGET_VERIFY honours a custom (tree) mask once the mask-policy
# hook captures the verify graph with one (docs/tree_mode.md §4). FA3 honours masks only for
# speculative_eagle_topk > 1 (DFLASH forces 1); TRTLLM MHA/MLA, FlashMLA, ... ignore them.
TREE_ATTENTION_BACKENDS = ("triton", "flashinfer")


class DominoServerArgsError(ValueError):
    """--speculative-algorithm domino was given arguments it cannot serve."""


def _fail(msg: str) -> None:
    raise DominoServerArgsError(f"[domino] {msg}")


def load_drafter_config(server_args: Any) -> DrafterConfig:
    """The drafter config from ``--speculative-draft-model-path`` (a local folder, or anything
    SGLang's ``get_config`` can read, e.g. a Hub id)."""
    path = server_args.speculative_draft_model_path
    try:
        if Path(path).is_dir() or Path(path).is_file():
            return DrafterConfig.from_file(path)
        from sglang.srt.utils.hf_transformers_utils import get_config

        hf = get_config(path, trust_remote_code=bool(server_args.trust_remote_code),
                        revision=getattr(server_args, "speculative_draft_model_revision", None))
        return DrafterConfig.from_dict(hf.to_dict())
    except ConfigError as exc:
        _fail(f"--speculative-draft-model-path {path}: {exc}")
    except OSError as exc:
        _fail(f"--speculative-draft-model-path {path}: cannot read its config.json ({exc})")


def load_target_config(server_args: Any) -> Any:
    """The target's HF config (dict-like access is enough for ``check_against_target``)."""
    path = server_args.model_path
    local = Path(path) / "config.json"
    overrides = json.loads(getattr(server_args, "json_model_override_args", None) or "{}")
    if local.is_file():
        cfg = json.loads(local.read_text())
        cfg.update(overrides)
        return cfg
    from sglang.srt.utils.hf_transformers_utils import get_config

    return get_config(path, trust_remote_code=bool(server_args.trust_remote_code),
                      revision=getattr(server_args, "revision", None),
                      model_override_args=overrides)


def fa3_import_error() -> str | None:
    """Why SGLang's FA3 attention backend cannot load here (None: it can): the import its
    ``FlashAttentionBackend`` makes. Builds of sgl-kernel without the ``flash_ops`` binary (the
    offline bundle of docs/gpu.md drops it) fail it."""
    try:
        import sgl_kernel.flash_attn  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA library
        return f"{type(exc).__name__}: {exc}"
    return None


def _declare_triton_attention(view: Any) -> dict:
    return {"attention_backend": "triton"}


def fall_back_from_missing_fa3(sa: Any) -> str | None:
    """When no attention backend was given and SGLang chose FA3 (its Hopper default) but this
    sgl-kernel cannot load FA3, declare triton instead (as SGLang declares its own model-specific
    overrides) and say so; SGLang would otherwise fail in the scheduler with "Can not import FA3
    in sgl_kernel". An explicit ``--attention-backend`` is never changed. Returns the reason, or
    None when nothing changed."""
    if any(getattr(sa, f, None) is not None for f in
           ("attention_backend", "prefill_attention_backend", "decode_attention_backend")):
        return None
    if getattr(_view(sa), "attention_backend", None) != "fa3":
        return None
    reason = fa3_import_error()
    if reason is None:
        return None
    from sglang.srt.arg_groups.overrides import run_post_process_pass

    run_post_process_pass(sa, _declare_triton_attention)
    logger.warning("[domino] no --attention-backend given and SGLang chose fa3 (its Hopper "
                   "default), but this sgl-kernel cannot load FA3 (%s): using "
                   "--attention-backend triton; pass --attention-backend to choose", reason)
    return reason


def validate_server_args(server_args: Any) -> None:
    """Checks that do not need SGLang's speculative resolution (raises on the first problem),
    then the one resolution of the serve configuration, stored on ``server_args``."""
    sa = server_args
    fall_back_from_missing_fa3(sa)
    if not sa.speculative_draft_model_path:
        _fail("--speculative-draft-model-path is required: the folder of a drafter in the "
              "public Domino/DFlash format (config.json with dflash_config + safetensors)")
    if int(getattr(sa, "pp_size", 1) or 1) != 1:
        _fail(f"--pp-size {sa.pp_size}: pipeline parallelism is not supported with domino")
    if getattr(sa, "enable_dp_attention", False):
        _fail("--enable-dp-attention is not supported with domino (DFLASH rejects it too)")
    if str(getattr(sa, "dtype", "auto")) not in _SUPPORTED_DTYPES:
        _fail(f"--dtype {sa.dtype}: supported are {list(_SUPPORTED_DTYPES)}")
    if getattr(sa, "speculative_use_rejection_sampling", False):
        _fail("--speculative-use-rejection-sampling is EAGLE-only; domino verifies sampled "
              "requests losslessly with the target-only sampled verify (drop the flag)")
    if getattr(sa, "enable_lora", False) or getattr(sa, "lora_paths", None):
        _fail("LoRA (--enable-lora / --lora-paths) is not supported with speculative "
              "decoding other than NGRAM in SGLang 0.5.17")
    steps = getattr(sa, "speculative_num_steps", None)
    if steps is not None and int(steps) != 1:
        _fail(f"--speculative-num-steps {steps}: domino drafts one block per step; set the "
              "block with --speculative-num-draft-tokens (or leave it to the draft config)")
    for flag in ("speculative_accept_threshold_single", "speculative_accept_threshold_acc"):
        value = getattr(sa, flag, None)
        if value is not None and float(value) != 1.0:
            _fail(f"--{flag.replace('_', '-')} {value}: values below 1 accept drafts the target "
                  "would not sample, so sampled output would no longer follow the target "
                  "distribution; domino keeps verification lossless (leave it at 1.0)")
    if getattr(sa, "mamba_radix_cache_strategy", None) == "extra_buffer_lazy":
        _fail("--mamba-radix-cache-strategy extra_buffer_lazy is unsupported with domino "
              "(as with DFLASH); use extra_buffer")

    drafter = load_drafter_config(sa)
    try:
        drafter.check_against_target(load_target_config(sa))
    except ConfigError as exc:
        _fail(f"draft {sa.speculative_draft_model_path} does not fit target {sa.model_path}: "
              f"{exc}")
    if drafter.mask_token_id is None and getattr(sa, "skip_tokenizer_init", False):
        _fail("dflash_config.mask_token_id: missing in the draft config, and "
              "--skip-tokenizer-init leaves no tokenizer to resolve the mask token")
    try:
        cfg = resolve_serve_config(sa, drafter, read_developer_switches())
    except ConfigError as exc:
        _fail(str(exc))
    if cfg.tree_mode:
        check_tree_server_args(sa, cfg)
    if getattr(sa, "quantization", None) and not cfg.allow_quantized:
        logger.warning("--quantization %s: the Domino head needs a floating-point target "
                       "lm_head; the worker refuses a quantized one at start-up",
                       sa.quantization)
    _log_serve_config(cfg, drafter)
    store_serve_config(sa, cfg)
    if default_warmups(sa):
        logger.info("domino: start-up warm-up on (--warmups %s: greedy, sampled, streamed and "
                    "JSON requests compile their kernels before the server listens; "
                    "--skip-server-warmup leaves it out)", sa.warmups)
    # the Domino worker runs the policy; SGLang's own (EAGLE-only) runtime would only log
    # "speculative_adaptive disabled" for this algorithm and clear the flag itself
    if getattr(sa, "speculative_adaptive", False):
        sa.speculative_adaptive = False


def _log_serve_config(cfg: DominoServeConfig, drafter: DrafterConfig) -> None:
    logger.info("%s", cfg.describe())
    if cfg.simulated_acceptance is not None:
        sim = cfg.simulated_acceptance
        logger.warning(
            "domino: SIMULATED ACCEPTANCE IS ON (SGLANG_SIMULATE_ACC_LEN=%g, method %s, token "
            "mode %s): every verify round commits a forced length, so outputs are NOT lossless "
            "(not the target's tokens) and the numbers are for throughput benchmarks ONLY",
            sim.acc_len, sim.method, sim.token_mode)
    if cfg.adaptive is not None and cfg.adaptive.enabled:
        logger.info(
            "domino: adaptive verify width ON (%s): batch-size slots %s, candidate widths %s "
            "of B=%s (DOMINO_ADAPTIVE=0 turns it off)", cfg.adaptive.source,
            [s.batch_size for s in cfg.adaptive.slots],
            [st + 1 for st in cfg.adaptive.candidate_steps], cfg.block_size)
    if cfg.block_size < drafter.resolved_block_size:
        logger.info("domino: verifying blocks of %s tokens with a drafter trained on %s",
                    cfg.block_size, drafter.resolved_block_size)
    if drafter.is_domino and drafter.pure_draft_prefix_len >= cfg.block_size - 1:
        logger.warning("domino: pure_draft_prefix_len=%s >= %s proposals per block: the "
                       "Domino head never applies", drafter.pure_draft_prefix_len,
                       cfg.block_size - 1)


def _view(sa: Any) -> Any:
    """SGLang's read-only view of the resolving configuration (declared values such as the
    resolved page size and attention backend overlaid), or ``sa`` itself."""
    try:
        from sglang.srt.arg_groups.overrides import resolved_view

        return resolved_view(sa)
    except Exception:  # no SGLang / another version: the fields themselves
        return sa


def _target_is_mambaish(sa: Any) -> bool:
    """Mamba / hybrid linear-attention target (DFlash then commits recurrent state after a
    chain verify, which a tree verify breaks). Unknown (no model config) -> False; the tree
    worker re-checks at start-up (``init_attention_backends``)."""
    get_model_config = getattr(sa, "get_model_config", None)
    if get_model_config is None:
        return False
    try:
        from sglang.srt.configs.hybrid_arch import mambaish_config

        return mambaish_config(get_model_config()) is not None
    except Exception as exc:  # noqa: BLE001 - the worker check still runs
        logger.warning("domino tree mode: could not check the target for Mamba/hybrid layers "
                       "(%s); the worker re-checks at start-up", exc)
        return False


def check_tree_server_args(server_args: Any, cfg: DominoServeConfig) -> None:
    """Tree mode (v1): refuse every server-level setting the tree worker cannot serve. Runs
    before the speculative resolution; attention backend and page size are already resolved."""
    from .serve_config import show_setting

    v = _view(server_args)
    tree = (f"tree mode ({show_setting(cfg.topk_source, cfg.tree_topk)}, "
            f"{show_setting(cfg.budget_source, cfg.tree_budget)})")
    for flag, attr in (("--attention-backend", "attention_backend"),
                       ("--prefill-attention-backend", "prefill_attention_backend"),
                       ("--decode-attention-backend", "decode_attention_backend")):
        value = getattr(v, attr, None)
        if value is None and attr != "attention_backend":
            continue  # the split flags fall back to --attention-backend
        if value not in TREE_ATTENTION_BACKENDS:
            _fail(f"{flag} {value}: {tree} verifies with a custom tree attention mask, which "
                  f"only the {' and '.join(TREE_ATTENTION_BACKENDS)} backends honour; pass "
                  "--attention-backend triton (or flashinfer)")
    page = getattr(v, "page_size", None)
    if page is not None and int(page) != 1:
        _fail(f"--page-size {page}: {tree} commits the accepted path by permuting KV slots "
              "(no copy), which needs --page-size 1")
    window = getattr(v, "speculative_draft_window_size", None)
    if window is not None:
        _fail(f"--speculative-draft-window-size {window}: not supported in {tree} yet (the "
              "compact draft cache is written for a chain verify); drop the flag")
    grammar = getattr(v, "grammar_backend", None)
    if grammar != "none":
        _fail(f"--grammar-backend {grammar}: grammar-constrained requests are not supported in "
              f"{tree} (SGLang's GrammarTree is chain-only); pass --grammar-backend none so "
              "json_schema / regex / ebnf requests are rejected cleanly per request")
    if _target_is_mambaish(server_args):
        _fail(f"--model-path {server_args.model_path}: a Mamba / hybrid linear-attention target "
              f"is not supported in {tree} (its recurrent state is committed after a chain "
              "verify); serve it in chain mode")


def check_resolved_server_args(server_args: Any) -> DominoServeConfig:
    """After ``_handle_dflash`` (and, in tree mode, the N override in
    ``DominoSpecAlgo.handle_server_args``): the resolved widths are the configuration's
    (chain: ``speculative_num_draft_tokens`` = B; tree: ``speculative_dflash_block_size`` = B,
    ``speculative_num_draft_tokens`` = N). Returns the configuration."""
    sa = server_args
    n = sa.speculative_num_draft_tokens
    if getattr(sa, CONFIG_ATTR, None) is None:
        # called outside SGLang's pipeline (tools, tests) on args validate_server_args never
        # saw: check against the configuration these args imply, resolved the same way
        try:
            cfg = resolve_serve_config(sa, load_drafter_config(sa), read_developer_switches())
        except ConfigError as exc:
            _fail(f"speculative_num_draft_tokens={n} (resolved): {exc}")
    else:
        cfg = serve_config_of(sa)
    if cfg.tree_mode:
        b = getattr(sa, "speculative_dflash_block_size", None)
        if b is None or int(b) != cfg.block_size or n is None or int(n) != cfg.num_verify_tokens:
            _fail(f"resolved speculative_dflash_block_size={b}, speculative_num_draft_tokens={n} "
                  f"(tree mode): expected B={cfg.block_size}, N={cfg.num_verify_tokens}")
        logger.info("domino tree mode (experimental): topk=%s budget=%s, draft block B=%s, "
                    "verify width N=%s", cfg.tree_topk, cfg.tree_budget, cfg.block_size,
                    cfg.num_verify_tokens)
        return cfg
    if n is None or int(n) != cfg.block_size:
        _fail(f"speculative_num_draft_tokens={n} (resolved): expected the block B="
              f"{cfg.block_size} of the domino serve config (drafter trained with "
              f"block_size={cfg.drafter_block_size})")
    return cfg
