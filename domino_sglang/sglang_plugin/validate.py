"""Server-argument checks for ``--speculative-algorithm domino`` (checked against SGLang 0.5.17).

Two stages, both raising :class:`DominoServerArgsError` (a ``ValueError``) whose message names
the flag or config field and its value:

* :func:`validate_server_args` runs *before* SGLang resolves the speculative arguments
  (``speculative_hook.py:129``): options Domino never supports, and the drafter checkpoint
  itself (``DrafterConfig``) against the target (``check_against_target``).
* :func:`check_resolved_server_args` runs *after* ``_handle_dflash`` filled in the block size
  (``DominoSpecAlgo.handle_server_args``): the resolved ``speculative_num_draft_tokens``
  against the drafter's block size.

Tensor parallel (``--tp-size`` >= 2, docs/tp.md): chain mode only, with the PyTorch head
(:func:`check_tp_server_args` refuses tree mode and ``DOMINO_HEAD_IMPL=triton``).

Tree mode (EXPERIMENTAL, ``DOMINO_TREE_TOPK`` >= 2 + ``DOMINO_TREE_BUDGET``, docs/tree_mode.md):
:func:`check_tree_server_args` refuses, before resolution, what the tree worker cannot serve
(target attention other than triton/flashinfer, page size > 1, a draft window, a grammar
backend, ``SGLANG_SIMULATE_ACC_LEN``, Mamba/hybrid targets); :func:`resolve_tree_widths` runs
after DFLASH's resolution and turns the draft block B into ``speculative_dflash_block_size = B``
and ``speculative_num_draft_tokens = N`` (the node budget, the verify width). Both read the
resolving configuration through SGLang's ``resolved_view`` (page size and attention backends are
declared, not yet written, while the speculative hook runs).

SGLang is imported lazily (``get_config`` to read the target config).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError, DrafterConfig
from .options import MAX_TREE_BUDGET, DominoServeOptions

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


def validate_server_args(server_args: Any) -> None:
    """Checks that do not need SGLang's speculative resolution (raises on the first problem)."""
    sa = server_args
    if not sa.speculative_draft_model_path:
        _fail("--speculative-draft-model-path is required: the folder of a drafter in the "
              "public Domino/DFlash format (config.json with dflash_config + safetensors)")
    tp = int(getattr(sa, "tp_size", 1) or 1)  # >= 2: chain mode only (check_tp_server_args)
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
    opts = serve_options(sa, drafter)
    if tp > 1:
        check_tp_server_args(tp, opts)
    block = drafter.resolved_block_size
    checked = [("--speculative-dflash-block-size",
                getattr(sa, "speculative_dflash_block_size", None))]
    if opts.tree_mode:
        check_tree_server_args(sa, opts)  # --speculative-num-draft-tokens is N: checked later
    else:
        checked.insert(0, ("--speculative-num-draft-tokens", sa.speculative_num_draft_tokens))
    for flag, value in checked:
        if value is not None and not 2 <= int(value) <= block:
            _fail(f"{flag} {value}: the drafter was trained with block_size={block}; use a "
                  f"value in [2, {block}] (or leave it unset to use {block})")


def check_tp_server_args(tp_size: int, opts: DominoServeOptions) -> None:
    """``--tp-size`` >= 2 (docs/tp.md): chain mode with the PyTorch head over vocabulary shards.
    Tree mode (its top-k tree build is not sharded) and the TP=1-only Triton head are refused."""
    if opts.tree_mode:
        _fail(f"--tp-size {tp_size} with tree mode ({opts.topk_source}={opts.tree_topk}): the "
              "tree build needs the full-vocabulary top-k and runs at --tp-size 1 only; unset "
              "DOMINO_TREE_TOPK / DOMINO_TREE_BUDGET (or the dflash_config tree keys) for chain "
              "mode, or serve the tree with --tp-size 1")
    if opts.head_impl == "triton":
        _fail(f"DOMINO_HEAD_IMPL=triton with --tp-size {tp_size}: the fused Triton head runs at "
              "--tp-size 1 only; unset DOMINO_HEAD_IMPL (auto picks the PyTorch head over the "
              "vocabulary shard) or set it to torch")


def serve_options(server_args: Any, drafter: DrafterConfig | None = None) -> DominoServeOptions:
    """The Domino options (env + the drafter's ``dflash_config``) of this server, checked as a
    pair (:meth:`DominoServeOptions.check_supported`); a bad value raises
    :class:`DominoServerArgsError` naming the variable or key."""
    drafter = drafter if drafter is not None else load_drafter_config(server_args)
    try:
        opts = DominoServeOptions.resolve(drafter)
        opts.check_supported()
    except ConfigError as exc:
        _fail(str(exc))
    return opts


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


def check_tree_server_args(server_args: Any, opts: DominoServeOptions) -> None:
    """Tree mode (v1): refuse every server-level setting the tree worker cannot serve. Runs
    before the speculative resolution; attention backend and page size are already resolved."""
    v = _view(server_args)
    tree = (f"tree mode ({opts.topk_source}={opts.tree_topk}, "
            f"{opts.budget_source}={opts.tree_budget})")
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
    sim = os.environ.get("SGLANG_SIMULATE_ACC_LEN", "").strip()
    try:
        simulated = bool(sim) and float(sim) > 0
    except ValueError:
        simulated = True
    if simulated:
        _fail(f"SGLANG_SIMULATE_ACC_LEN={sim}: simulated acceptance is chain-only; unset it "
              f"for {tree}")
    if _target_is_mambaish(server_args):
        _fail(f"--model-path {server_args.model_path}: a Mamba / hybrid linear-attention target "
              f"is not supported in {tree} (its recurrent state is committed after a chain "
              "verify); serve it in chain mode")


def resolve_tree_widths(server_args: Any, opts: DominoServeOptions,
                        requested_num_draft_tokens: Any = None,
                        drafter: DrafterConfig | None = None) -> tuple[int, int]:
    """Tree mode, after DFLASH's resolution (which put the draft block B into
    ``speculative_num_draft_tokens``): check B and the budget, then set
    ``speculative_dflash_block_size = B`` and ``speculative_num_draft_tokens = N`` (the verify
    width: KV reserve, target graph width, result stride). ``requested_num_draft_tokens`` is the
    user's ``--speculative-num-draft-tokens`` (None when unset): it must equal N. Returns (B, N).
    """
    sa = server_args
    drafter = drafter if drafter is not None else load_drafter_config(sa)
    block = drafter.resolved_block_size
    b = int(sa.speculative_num_draft_tokens)
    if not 2 <= b <= block:
        _fail(f"speculative_dflash_block_size={b} (resolved draft block): must be in [2, "
              f"{block}] for a drafter trained with block_size={block}")
    budget = int(opts.tree_budget)
    if budget < b:
        _fail(f"{opts.budget_source}={budget}: below the draft block size B={b}; tree mode "
              f"needs B <= budget <= {MAX_TREE_BUDGET} (the B-token draft block is written "
              "inside the N-token verify reservation)")
    n = opts.tree_nodes(b)
    if requested_num_draft_tokens is not None and int(requested_num_draft_tokens) != n:
        _fail(f"--speculative-num-draft-tokens {requested_num_draft_tokens}: in tree mode it is "
              f"the verify width N = min({opts.budget_source}={budget}, 1 + (B-1) * "
              f"{opts.topk_source}={opts.tree_topk}) = {n} for draft block B={b}; leave it unset "
              "(set the draft block with --speculative-dflash-block-size) or pass "
              f"{n}")
    sa.speculative_dflash_block_size = b
    sa.speculative_num_draft_tokens = n
    logger.info("domino tree mode (experimental): topk=%s budget=%s, draft block B=%s, verify "
                "width N=%s", opts.tree_topk, budget, b, n)
    return b, n


def check_resolved_server_args(server_args: Any, drafter: DrafterConfig | None = None) -> None:
    """After ``_handle_dflash`` (and, in tree mode, :func:`resolve_tree_widths`): the resolved
    block fits the drafter; in tree mode N is the node budget of the resolved B."""
    sa = server_args
    drafter = drafter if drafter is not None else load_drafter_config(sa)
    block = drafter.resolved_block_size
    n = sa.speculative_num_draft_tokens
    opts = serve_options(sa, drafter)
    if opts.tree_mode:
        b = getattr(sa, "speculative_dflash_block_size", None)
        if b is None or not 2 <= int(b) <= block:
            _fail(f"speculative_dflash_block_size={b} (resolved, tree mode): must be in [2, "
                  f"{block}] for a drafter trained with block_size={block}")
        expect = opts.tree_nodes(int(b))
        if n is None or int(n) != expect or expect < int(b):
            _fail(f"speculative_num_draft_tokens={n} (resolved, tree mode): must be the node "
                  f"budget N={expect} >= B={b}")
        return
    if n is None or not 2 <= int(n) <= block:
        _fail(f"speculative_num_draft_tokens={n} (resolved): must be in [2, {block}] for a "
              f"drafter trained with block_size={block}")
    if int(n) < block:
        logger.info("domino: verifying blocks of %s tokens with a drafter trained on %s", n,
                    block)
    if drafter.is_domino and drafter.pure_draft_prefix_len >= int(n) - 1:
        logger.warning("domino: pure_draft_prefix_len=%s >= %s proposals per block: the "
                       "Domino head never applies", drafter.pure_draft_prefix_len, int(n) - 1)
