"""Request guard: refuse token ids outside the target's vocabulary with a 400.

SGLang 0.5.17 defines ``TokenizerManager._validate_input_ids_in_vocab`` but never calls it, so a
``/generate`` (or ``/v1/completions`` with a token-id prompt) carrying an id >= vocab_size
reaches the embedding lookup and kills the scheduler with a device-side assert (seen on the
H200, 2026-11-29: one such request took a Domino server down, and every later request failed).

The plugin registers a BEFORE hook on ``TokenizerManager._validate_one_request`` (the per-request
validation that already turns ``ValueError`` into a 400 for over-long prompts). It acts only in a
server launched with ``--speculative-algorithm domino``; other servers are untouched.
"""

from __future__ import annotations

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request"


def out_of_vocab_message(input_ids, vocab_size: int) -> str | None:
    """The error for the first id outside [0, vocab_size), or None when all are inside."""
    if not input_ids or not vocab_size:
        return None
    for pos, tok in enumerate(input_ids):
        if not isinstance(tok, int) or tok < 0 or tok >= vocab_size:
            return (f"input_ids[{pos}] = {tok!r} is outside the vocabulary: token ids must be "
                    f"integers in [0, {vocab_size}) for this model")
    return None


def _is_domino(server_args) -> bool:
    algo = getattr(server_args, "speculative_algorithm", None)
    return str(getattr(algo, "name", algo) or "").upper() == "DOMINO"


def check_input_ids_hook(tokenizer_manager, obj, input_ids, *args, **kwargs):
    """BEFORE hook: raise ValueError (-> HTTP 400) on an out-of-vocabulary token id."""
    if not _is_domino(getattr(tokenizer_manager, "server_args", None)):
        return None
    model_config = getattr(tokenizer_manager, "model_config", None)
    msg = out_of_vocab_message(input_ids, getattr(model_config, "vocab_size", 0))
    if msg is not None:
        raise ValueError(msg)
    return None


def install() -> None:
    """Register the hook with SGLang's HookRegistry (idempotent); ``load_plugins`` applies it
    right after the plugins ran."""
    from .hooks import install_hook

    install_hook(TARGET, check_input_ids_hook, "before")
