#!/usr/bin/env python3
"""Judge the greedy-equality mismatches of a finished side-by-side run again, from the tie
reports stored in its JSON (no GPU, no server): a mismatch is a tie when AR's served logit gap
or the fp32 reference gap at the first differing token is within the dtype's rounding step
(``domino_sglang.bench.ties.judge``). Runs judged before the reference gap counted (up to
session 15) said ``all ties: False`` for 2-ulp served gaps whose exact gap was under half an ulp.

Writes ``<stem>_rejudged.json`` / ``.md`` beside the input (or in ``--out-dir``): the run's data
with the new verdicts and a ``rejudged`` block (date, command, this checkout's commit); the input
file is left as it was::

    python3 benchmarks/rejudge_ties.py benchmarks/results/.../side_by_side_20261207_205342.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domino_sglang.bench import side_by_side as sbs  # noqa: E402
from domino_sglang.bench.harness import provenance, write_results  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="side_by_side_*.json of finished runs")
    p.add_argument("--tie-ulps", type=float, default=None,
                   help="threshold in ulps (default: the run's own --tie-ulps, else 1)")
    p.add_argument("--out-dir", type=Path, default=None, help="default: beside each input")
    args = p.parse_args(argv)
    for f in args.files:
        if not f.is_file():
            p.error(f"{f}: no such file")
        data = json.loads(f.read_text())
        if "equality" not in data or "plan" not in data:
            p.error(f"{f}: not a side-by-side result (no 'equality' / 'plan')")
        new = sbs.rejudge(data, args.tie_ulps)
        meta = provenance()
        new["rejudged"] = {"from": f.name, "date": meta["date"], "command": meta["command"],
                           "git": meta["git"], "before": data.get("verdict")}
        md = sbs.render_markdown(new)
        md += (f"\n\nRe-judged from `{f.name}` on {meta['date']} by `{meta['command']}` at "
               f"commit {meta['git'].get('commit')} (dirty: {meta['git'].get('dirty')}); "
               f"verdict before: `{json.dumps(data.get('verdict'))}`\n")
        paths = write_results(args.out_dir or f.parent, f.stem + "_rejudged", new, md)
        v, b = new["verdict"], data.get("verdict") or {}
        print(f"{f.name}: not ties {b.get('not_ties')} -> {v['not_ties']}, all ties "
              f"{b.get('all_mismatches_are_ties')} -> {v['all_mismatches_are_ties']}; wrote "
              f"{', '.join(str(x) for x in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
