"""The plugin's one way to hook SGLang functions (``HookRegistry``, public API only).

``HookRegistry`` has no public query of what is registered, so idempotency is kept here: the
(target, hook) pairs this plugin registered in this process (append-only bookkeeping, written
when a hook is installed, never reset). ``apply=True`` runs ``HookRegistry.apply_hooks()`` at
once (for hooks installed after ``load_plugins`` already applied the others: targets applied
before are skipped by SGLang) and checks the public ``__wrapped__`` attribute that SGLang's
wrappers carry, so a hook that failed to apply (SGLang only logs it) is an error here.

Note: ``HookRegistry.reset()`` (tests) forgets SGLang's side but not this bookkeeping and does
not undo patches either (docs/SGLANG-0.5.17.md §1.2): test hook installation in a subprocess.
"""

from __future__ import annotations

import pkgutil
from typing import Callable

_INSTALLED: set[tuple[str, int]] = set()


class HookNotAppliedError(RuntimeError):
    """A hook registered with SGLang did not patch its target."""


def install_hook(target: str, hook: Callable, hook_type: str = "after", *,
                 apply: bool = False) -> None:
    """Register ``hook`` on the dotted ``target`` once per process (``hook_type``: before,
    after, around or replace). ``apply``: apply now and check that the target is wrapped."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    key = (target, id(hook))
    if key not in _INSTALLED:
        HookRegistry.register(target, hook, HookType(hook_type))
        _INSTALLED.add(key)
    if apply:
        HookRegistry.apply_hooks()
        if getattr(pkgutil.resolve_name(target), "__wrapped__", None) is None:
            raise HookNotAppliedError(
                f"domino: the {hook_type} hook {getattr(hook, '__qualname__', hook)} on "
                f"{target} was not applied (see the HookRegistry error above)")


def is_installed(target: str, hook: Callable) -> bool:
    """Whether this process registered ``hook`` on ``target`` through :func:`install_hook`."""
    return (target, id(hook)) in _INSTALLED
