"""SGLang plugin: ``--speculative-algorithm domino`` on a stock SGLang 0.5.17.

Entry point (setup.py): ``sglang.srt.plugins: domino = domino_sglang.sglang_plugin:register``.
SGLang runs it in the launcher, in ``Engine`` and in every scheduler process
(``sglang.srt.plugins.load_plugins``). Nothing in SGLang is patched on disk, and in chain mode
(the default) the only hook is the request guard (``request_guard``: a token id outside the
vocabulary gets a 400 instead of a device-side assert; Domino servers only): the algorithm is registered through the public
``SpeculativeAlgorithm.register`` with :class:`~.spec_algo.DominoSpecAlgo` (answers like DFLASH
at every algorithm branch: the table is in ``spec_algo``'s docstring) and a factory returning
:class:`~.worker.DominoWorkerV2`.

Configuration (docs/serve_config.md): one frozen :class:`~.serve_config.DominoServeConfig`,
resolved once in the launcher by the ``validate_server_args`` hook from SGLang's flags, the
drafter's ``dflash_config`` and the developer switches of ``options`` (the one module that reads
the environment), and carried to the scheduler processes on the pickled ``ServerArgs``. The
factory and the workers read it from their ``server_args``.

EXPERIMENTAL tree mode (``--speculative-eagle-topk`` >= 2 with ``--speculative-num-draft-tokens``
N; docs/tree_mode.md): the factory, which runs in the scheduler process before any worker or
CUDA graph exists, returns :class:`~.tree_worker.DominoTreeWorkerV2` after registering + applying
the AFTER hook ``tree_worker.tree_mask_policy`` on ``dflash_utils.resolve_dflash_verify_mask_policy``
(the target verify graph is captured with a custom mask; the hook answers from the published
serve configuration). Chain servers never reach that branch.

Modules: ``spec_algo`` (algorithm object), ``validate`` (server-argument checks), ``worker``
(DFlashWorkerV2 subclass, proposal seam only), ``draft_model`` (DFlashDraftModel + head
weights), ``head`` (capture-safe head, the torch/Triton seam), ``serve_config`` (the serve
configuration), ``options`` (developer switches: the environment), ``hooks`` (HookRegistry use).
This ``__init__`` imports no SGLang at import time.
"""

from __future__ import annotations

import logging

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
    from .options import allow_any_sglang_version

    if base not in SUPPORTED_SGLANG_VERSIONS and not allow_any_sglang_version():
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
    from .hooks import HookNotAppliedError, install_hook
    from .tree_worker import tree_mask_policy

    try:
        install_hook(TREE_MASK_HOOK_TARGET, tree_mask_policy, "after", apply=True)
    except HookNotAppliedError as exc:
        raise DominoPluginError(f"domino tree mode: {exc}; without it the target verify graph "
                                "ignores the tree mask") from None


def check_simulated_acceptance(cfg) -> None:
    """Simulated acceptance is applied by SGLang's ``DFlashWorkerV2.forward_batch_generation``
    from module constants read when ``speculative.spec_utils`` was imported
    (``dflash_worker_v2.SIMULATE_ACC_LEN`` / ``_METHOD`` / ``_TOKEN_MODE``). The serve config
    recorded the launcher's values; they must be what this process's DFlash worker will use."""
    from sglang.srt.speculative import dflash_worker_v2 as dw

    seen = (float(dw.SIMULATE_ACC_LEN), dw.SIMULATE_ACC_METHOD, dw.SIMULATE_ACC_TOKEN_MODE)
    sim = cfg.simulated_acceptance
    want = ((sim.acc_len, sim.method, sim.token_mode) if sim is not None
            else (None, None, None))
    on = seen[0] > 0
    if (sim is None and on) or (sim is not None and seen != want):
        raise DominoPluginError(
            f"domino: simulated acceptance differs between the launcher (serve config: "
            f"{sim}) and this scheduler process (SGLang's dflash_worker_v2 constants: "
            f"SGLANG_SIMULATE_ACC_LEN={seen[0]:g}, METHOD={seen[1]}, TOKEN_MODE={seen[2]}); "
            "set SGLANG_SIMULATE_ACC_* in the launcher's environment only")
    if sim is not None:
        logger.warning(
            "domino: SIMULATED ACCEPTANCE IS ON in this worker (SGLANG_SIMULATE_ACC_LEN=%g, "
            "%s, %s): outputs are NOT lossless; benchmark numbers only", sim.acc_len,
            sim.method, sim.token_mode)


def _factory(server_args):
    """Runs in the scheduler process before the worker (and the draft model) is built; returns
    the chain worker, or (tree mode in the serve config) the tree worker after arming the mask
    hook."""
    from .serve_config import serve_config_of

    cfg = serve_config_of(server_args)
    if not cfg.tree_mode:
        check_simulated_acceptance(cfg)
        if cfg.sampled_verify != "sglang":
            from .sampled_verify import install_sampled_verify_hooks

            install_sampled_verify_hooks(planted=cfg.sampled_verify == "planted-wrong-residual")
        from .worker import DominoWorkerV2

        return DominoWorkerV2
    block, n = server_args.speculative_dflash_block_size, server_args.speculative_num_draft_tokens
    if block != cfg.block_size or n != cfg.num_verify_tokens:
        raise DominoPluginError(
            f"domino tree mode: the server arguments carry speculative_dflash_block_size="
            f"{block}, speculative_num_draft_tokens={n}, but the serve config says B="
            f"{cfg.block_size}, N={cfg.num_verify_tokens}: they were changed after resolution")
    from . import tree_worker

    _install_tree_mask_hook()
    logger.warning("domino: EXPERIMENTAL tree mode (topk=%s, budget=%s, B=%s, N=%s): greedy "
                   "lossless on the H200 but slower than chain mode so far, see "
                   "docs/tree_mode.md", cfg.tree_topk, cfg.tree_budget, block, n)
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
    from .warmup import register_warmup

    register_warmup()
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
