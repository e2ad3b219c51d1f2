"""SGLang plugin: ``--speculative-algorithm domino`` on a stock SGLang 0.5.17.

Entry point (setup.py): ``sglang.srt.plugins: domino = domino_sglang.sglang_plugin:register``.
SGLang runs it in the launcher, in ``Engine`` and in every scheduler process
(``sglang.srt.plugins.load_plugins``). Nothing in SGLang is patched on disk, and in chain mode
(the default) the only hook is the request guard (``request_guard``: a token id outside the
vocabulary gets a 400 instead of a device-side assert; Domino servers only): the algorithm is registered through the public
``SpeculativeAlgorithm.register`` with :class:`~.spec_algo.DominoSpecAlgo` (answers like DFLASH
at every algorithm branch: the table is in ``spec_algo``'s docstring) and a factory returning
:class:`~.worker.DominoWorkerV2`.

EXPERIMENTAL tree mode (``DOMINO_TREE_TOPK`` >= 2 + ``DOMINO_TREE_BUDGET``, or the drafter's
``dflash_config.tree_topk`` / ``tree_budget``; docs/tree_mode.md): the factory, which runs in the
scheduler process before any worker or CUDA graph exists, returns
:class:`~.tree_worker.DominoTreeWorkerV2`, tells the algorithm object the draft width B, and
only then registers + applies the AFTER hook ``tree_worker.tree_mask_policy`` on
``dflash_utils.resolve_dflash_verify_mask_policy`` through SGLang's ``HookRegistry`` (the target
verify graph is captured with a custom mask). Chain servers never reach that branch.

Modules: ``spec_algo`` (algorithm object), ``validate`` (server-argument checks), ``worker``
(DFlashWorkerV2 subclass, proposal seam only), ``draft_model`` (DFlashDraftModel + head
weights), ``head`` (capture-safe head, the torch/Triton seam), ``options`` (env/config options).
This ``__init__`` imports no SGLang at import time.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

SUPPORTED_SGLANG_VERSIONS = ("0.5.17",)
ALGORITHM_NAME = "DOMINO"


class DominoPluginError(RuntimeError):
    """The plugin cannot run with the installed SGLang."""


def _installed_sglang_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        return None


def check_sglang_version(installed: str | None = None) -> str:
    installed = installed if installed is not None else _installed_sglang_version()
    if installed is None:
        raise DominoPluginError("domino_sglang plugin: SGLang is not installed; install "
                                "`domino-sglang[serve]` (sglang==0.5.17)")
    base = installed.split("+")[0]
    if base not in SUPPORTED_SGLANG_VERSIONS and os.environ.get("DOMINO_SGLANG_ANY_VERSION") != "1":
        raise DominoPluginError(
            f"domino_sglang plugin: SGLang {installed} is not supported (supported: "
            f"{', '.join(SUPPORTED_SGLANG_VERSIONS)}); `--speculative-algorithm domino` is NOT "
            "registered. Install sglang==0.5.17 (pip install 'domino-sglang[serve]'), or set "
            "DOMINO_SGLANG_ANY_VERSION=1 to try anyway.")
    return installed


TREE_MASK_HOOK_TARGET = "sglang.srt.speculative.dflash_utils.resolve_dflash_verify_mask_policy"


def _install_tree_mask_hook() -> None:
    """Register and apply the tree mask-policy AFTER hook (tree mode only; idempotent).
    ``load_plugins`` already ran ``HookRegistry.apply_hooks()`` before the scheduler built its
    workers, so apply again: already-patched targets are skipped."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from .tree_worker import tree_mask_policy

    hooks = HookRegistry._hooks.get(TREE_MASK_HOOK_TARGET, [])
    if not any(h is tree_mask_policy for _, h, _ in hooks):
        HookRegistry.register(TREE_MASK_HOOK_TARGET, tree_mask_policy, HookType.AFTER)
    HookRegistry.apply_hooks()
    from sglang.srt.speculative import dflash_utils

    if getattr(dflash_utils.resolve_dflash_verify_mask_policy, "__wrapped__", None) is None:
        raise DominoPluginError(
            f"domino tree mode: the mask-policy hook on {TREE_MASK_HOOK_TARGET} was not "
            "applied (see the HookRegistry error above); without it the target verify graph "
            "ignores the tree mask")


def _factory(server_args):
    """Runs in the scheduler process before the worker (and the draft model) is built; returns
    the chain worker, or (tree options set) the tree worker after arming the mask hook."""
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    from .validate import serve_options

    algo = SpeculativeAlgorithm.from_string(ALGORITHM_NAME)
    opts = serve_options(server_args)
    if not opts.tree_mode:
        from .sampled_verify import install_sampled_verify_hooks, sampled_verify_choice

        if sampled_verify_choice() == "domino":
            install_sampled_verify_hooks()
        algo.configure_tree(None)
        import sys

        tw = sys.modules.get(__name__ + ".tree_worker")
        if tw is not None:
            tw.TREE_MASK_ACTIVE = False
        from .worker import DominoWorkerV2

        return DominoWorkerV2
    block = getattr(server_args, "speculative_dflash_block_size", None)
    n = server_args.speculative_num_draft_tokens
    if block is None or n is None or int(n) != opts.tree_nodes(int(block)):
        raise DominoPluginError(
            f"domino tree mode: the server arguments were resolved without the tree options "
            f"(speculative_dflash_block_size={block}, speculative_num_draft_tokens={n}, expected "
            f"N={opts.tree_nodes(int(block)) if block is not None else '?'}): set "
            "DOMINO_TREE_TOPK / DOMINO_TREE_BUDGET in the environment of the launcher, not only "
            "of the scheduler")
    from . import tree_worker

    algo.configure_tree(int(block))
    tree_worker.TREE_MASK_ACTIVE = True
    _install_tree_mask_hook()
    logger.warning("domino: EXPERIMENTAL tree mode (topk=%s, budget=%s, B=%s, N=%s): greedy "
                   "lossless on the H200 but slower than chain mode so far, see "
                   "docs/tree_mode.md", opts.tree_topk, opts.tree_budget, block, n)
    return tree_worker.DominoTreeWorkerV2


def register() -> bool:
    """Register ``DOMINO`` with SGLang. Idempotent, CUDA-free; returns True when registered.

    Raises :class:`DominoPluginError` (logged by SGLang's ``load_plugins``) on an unsupported
    SGLang version; the message says what to install.
    """
    try:
        check_sglang_version()
    except DominoPluginError as exc:
        logger.error("%s", exc)
        raise
    from sglang.srt.speculative import spec_registry
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    from .request_guard import install as install_request_guard

    install_request_guard()
    if spec_registry.get_spec(ALGORITHM_NAME) is not None:
        return True
    from .spec_algo import DominoSpecAlgo
    from .validate import validate_server_args

    SpeculativeAlgorithm.register(ALGORITHM_NAME, supports_overlap=True,
                                  validate_server_args=validate_server_args,
                                  spec_class=DominoSpecAlgo)(_factory)
    logger.debug("registered speculative algorithm %s", ALGORITHM_NAME)
    return True


__all__ = ["ALGORITHM_NAME", "DominoPluginError", "SUPPORTED_SGLANG_VERSIONS",
           "TREE_MASK_HOOK_TARGET", "check_sglang_version", "register"]
