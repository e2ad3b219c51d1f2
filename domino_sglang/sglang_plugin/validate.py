"""Server-argument checks for ``--speculative-algorithm domino`` (checked against SGLang 0.5.17).

Two stages, both raising :class:`DominoServerArgsError` (a ``ValueError``) whose message names
the flag or config field and its value:

* :func:`validate_server_args` runs *before* SGLang resolves the speculative arguments
  (``speculative_hook.py:129``): options Domino never supports, and the drafter checkpoint
  itself (``DrafterConfig``) against the target (``check_against_target``).
* :func:`check_resolved_server_args` runs *after* ``_handle_dflash`` filled in the block size
  (``DominoSpecAlgo.handle_server_args``): the resolved ``speculative_num_draft_tokens``
  against the drafter's block size.

SGLang is imported lazily (``get_config`` to read the target config).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError, DrafterConfig
from .options import DominoServeOptions

logger = logging.getLogger(__name__)

_SUPPORTED_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


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


def validate_server_args(server_args: Any) -> None:
    """Checks that do not need SGLang's speculative resolution (raises on the first problem)."""
    sa = server_args
    if not sa.speculative_draft_model_path:
        _fail("--speculative-draft-model-path is required: the folder of a drafter in the "
              "public Domino/DFlash format (config.json with dflash_config + safetensors)")
    if int(getattr(sa, "tp_size", 1) or 1) != 1:
        _fail(f"--tp-size {sa.tp_size}: the Domino plugin supports tensor parallel size 1 only "
              "for now (the head is not vocabulary-sharded); use --tp-size 1 or "
              "--speculative-algorithm DFLASH")
    if int(getattr(sa, "pp_size", 1) or 1) != 1:
        _fail(f"--pp-size {sa.pp_size}: pipeline parallelism is not supported with domino")
    if getattr(sa, "enable_dp_attention", False):
        _fail("--enable-dp-attention is not supported with domino (DFLASH rejects it too)")
    if str(getattr(sa, "dtype", "auto")) not in _SUPPORTED_DTYPES:
        _fail(f"--dtype {sa.dtype}: supported are {list(_SUPPORTED_DTYPES)}")
    if getattr(sa, "speculative_use_rejection_sampling", False):
        _fail("--speculative-use-rejection-sampling is EAGLE-only; domino verifies sampled "
              "requests losslessly with the target-only sampled verify (drop the flag)")
    if getattr(sa, "speculative_adaptive", False):
        _fail("--speculative-adaptive is EAGLE-only; drop it for domino")
    if getattr(sa, "enable_lora", False) or getattr(sa, "lora_paths", None):
        _fail("LoRA (--enable-lora / --lora-paths) is not supported with speculative "
              "decoding other than NGRAM in SGLang 0.5.17")
    topk = getattr(sa, "speculative_eagle_topk", None)
    if topk is not None and int(topk) != 1:
        _fail(f"--speculative-eagle-topk {topk}: domino drafts one chain per block; tree "
              "settings go through DOMINO_TREE_TOPK / DOMINO_TREE_BUDGET (see launch/README.md)")
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
    if getattr(sa, "quantization", None) and os.environ.get("DOMINO_ALLOW_QUANTIZED") != "1":
        logger.warning("--quantization %s: the Domino head needs a floating-point target "
                       "lm_head; the worker refuses a quantized one at start-up",
                       sa.quantization)

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
        DominoServeOptions.resolve(drafter).check_supported()
    except ConfigError as exc:
        _fail(str(exc))
    block = drafter.resolved_block_size
    for flag, value in (("--speculative-num-draft-tokens", sa.speculative_num_draft_tokens),
                        ("--speculative-dflash-block-size",
                         getattr(sa, "speculative_dflash_block_size", None))):
        if value is not None and not 2 <= int(value) <= block:
            _fail(f"{flag} {value}: the drafter was trained with block_size={block}; use a "
                  f"value in [2, {block}] (or leave it unset to use {block})")


def check_resolved_server_args(server_args: Any) -> None:
    """After ``_handle_dflash``: the resolved block fits the drafter."""
    sa = server_args
    drafter = load_drafter_config(sa)
    block = drafter.resolved_block_size
    n = sa.speculative_num_draft_tokens
    if n is None or not 2 <= int(n) <= block:
        _fail(f"speculative_num_draft_tokens={n} (resolved): must be in [2, {block}] for a "
              f"drafter trained with block_size={block}")
    if int(n) < block:
        logger.info("domino: verifying blocks of %s tokens with a drafter trained on %s", n,
                    block)
    if drafter.is_domino and drafter.pure_draft_prefix_len >= int(n) - 1:
        logger.warning("domino: pure_draft_prefix_len=%s >= %s proposals per block: the "
                       "Domino head never applies", drafter.pure_draft_prefix_len, int(n) - 1)
