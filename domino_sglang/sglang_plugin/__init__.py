"""SGLang plugin: ``--speculative-algorithm domino`` on a stock SGLang 0.5.17.

Entry point (setup.py): ``sglang.srt.plugins: domino = domino_sglang.sglang_plugin:register``.
SGLang runs it in the launcher, in ``Engine`` and in every scheduler process
(``sglang.srt.plugins.load_plugins``). Nothing in SGLang is patched on disk and no hook is
installed: the algorithm is registered through the public ``SpeculativeAlgorithm.register``
with :class:`~.spec_algo.DominoSpecAlgo` (answers like DFLASH at every algorithm branch: the
table is in ``spec_algo``'s docstring) and a factory returning :class:`~.worker.DominoWorkerV2`.

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


def _factory(server_args):
    """Runs in the scheduler process before the worker (and the draft model) is built."""
    from .worker import DominoWorkerV2

    return DominoWorkerV2


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
           "check_sglang_version", "register"]
