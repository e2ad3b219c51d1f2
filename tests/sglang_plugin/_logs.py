"""Test helper: the messages logged to one logger, through a handler of its own (SGLang's
logging set-up may stop propagation to pytest's caplog)."""

import logging
from contextlib import contextmanager


@contextmanager
def logged(name):
    """The messages logged to logger ``name`` while the block runs."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda r: records.append(r.getMessage())
    log = logging.getLogger(name)
    old_level, old_disabled = log.level, log.disabled
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.disabled = False
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.disabled = old_disabled
