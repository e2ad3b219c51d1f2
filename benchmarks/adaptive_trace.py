#!/usr/bin/env python3
"""Summarise a Domino server's per-round trace (``DOMINO_ADAPTIVE_TRACE=PATH``, issue #14).

The adaptive chain server measures each decode round's period (host time from one round's
start to the next) and charges it to the round's width; its policy keeps only *steady* rounds
(the previous round ran the same width). This table shows what those measurements look like by
batch-size bucket, width and position in a run of one width (0 = the switch round, 1, 2, 3+),
so a bias in the policy's cost estimates (e.g. rounds right after a switch still paying for it)
is visible::

    DOMINO_ADAPTIVE_TRACE=/tmp/trace.jsonl python -m sglang.launch_server ... \\
        --speculative-algorithm domino ...
    python benchmarks/adaptive_trace.py /tmp/trace.jsonl [--out summary.json]

Columns: rounds, median period ms [p20-p80], median forward ms (the worker's own host time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domino_sglang.bench.adaptive_trace import read_trace, render, summarise  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace", help="the JSON-lines file DOMINO_ADAPTIVE_TRACE wrote")
    p.add_argument("--out", default=None, help="also write the summary as JSON here")
    args = p.parse_args(argv)
    path = Path(args.trace)
    if not path.is_file():
        p.error(f"{path}: no such file (start the server with DOMINO_ADAPTIVE_TRACE={path})")
    try:
        records = read_trace(path)
    except ValueError as exc:
        p.error(str(exc))
    summary = summarise(records)
    print(render(summary), end="")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
