"""The Domino server's per-round trace (``DOMINO_ADAPTIVE_TRACE``, issue #14), summarised by
batch-size bucket, width and position in a run of one width (0 = the switch round, 1, 2, 3+):
the raw data behind the adaptive policy's cost estimates. ``benchmarks/adaptive_trace.py`` is
the command line; ``benchmarks/side_by_side.py --adaptive-trace`` adds it to its report."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.adaptive import bucket_of
from .stats import summarize


def read_trace(path: str | Path) -> list[dict]:
    """The JSON lines of a trace file; a bad line raises ValueError naming it."""
    path = Path(path)
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{i}: not a JSON line") from None
    return out


def run_group(run: int) -> str:
    return str(run) if run < 3 else "3+"


def summarise(records: list[dict]) -> dict:
    """{bucket: {width: {run group: {"n", "ms", "fwd_ms"}}}} plus counts."""
    groups: dict = {}
    rounds = [r for r in records if "w" in r]
    for r in rounds:
        key = (bucket_of(int(r["bs"])), int(r["w"]), run_group(int(r.get("run", 0))))
        g = groups.setdefault(key, {"ms": [], "fwd": []})
        g["ms"].append(float(r["ms"]))
        if r.get("fwd_ms") is not None:
            g["fwd"].append(float(r["fwd_ms"]))
    out: dict = {"rounds": len(rounds),
                 "interrupts": sum(1 for r in records if r.get("interrupt")), "buckets": {}}
    for (b, w, run), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                   kv[0][2])):
        out["buckets"].setdefault(str(b), {}).setdefault(str(w), {})[run] = {
            "n": len(g["ms"]), "ms": summarize(g["ms"]).as_dict(),
            "fwd_ms": summarize(g["fwd"]).as_dict() if g["fwd"] else None}
    gaps = interrupt_gaps(records)
    out["interrupt_gaps"] = ({k: summarize(v).as_dict() for k, v in gaps.items()}
                             | {"n": len(gaps["lead_ms"])}) if gaps["lead_ms"] else None
    return out


def interrupt_gaps(records: list[dict]) -> dict:
    """What one non-decode forward (a prefill, mostly) costs the decode rounds around it, for
    each lone interrupt with a recorded round on either side. The round just before an
    interrupt is never recorded (its interval has no end), so it starts at ``prev.t +
    prev.ms``. ``lead_ms``: from that last round's start to the interrupt (the round itself,
    then finishing the request, the client's next request, scheduling); ``gap_ms``: from the
    interrupt to the next decode round's start (the forward and its bookkeeping). At
    concurrency 1 their sum is what a request costs beyond its steady rounds."""
    lead, gap = [], []
    for i in range(1, len(records) - 1):
        prev, r, nxt = records[i - 1], records[i], records[i + 1]
        if r.get("interrupt") and "w" in prev and "w" in nxt:
            lead.append((float(r["t"]) - float(prev["t"])) * 1e3 - float(prev["ms"]))
            gap.append((float(nxt["t"]) - float(r["t"])) * 1e3)
    return {"lead_ms": lead, "gap_ms": gap}


def _gap_lines(g: dict | None) -> list[str]:
    if not g:
        return []
    return [f"around {g['n']} lone non-decode forwards: last round start -> forward "
            f"{g['lead_ms']['median']:.1f} ms [{g['lead_ms']['lo']:.1f}-{g['lead_ms']['hi']:.1f}],"
            f" forward -> next round start {g['gap_ms']['median']:.1f} ms "
            f"[{g['gap_ms']['lo']:.1f}-{g['gap_ms']['hi']:.1f}]", ""]


def render(summary: dict) -> str:
    lines = [f"rounds: {summary['rounds']}, intervals cut by a non-decode forward: "
             f"{summary['interrupts']}", "",
             *_gap_lines(summary.get("interrupt_gaps")),
             "| bucket | width | run | rounds | period ms [p20-p80] | forward ms |",
             "| ---: | ---: | --- | ---: | --- | ---: |"]
    for b, widths in summary["buckets"].items():
        for w, runs in widths.items():
            for run, c in runs.items():
                ms = c["ms"]
                fwd = c["fwd_ms"]["median"] if c["fwd_ms"] else None
                lines.append(f"| {b} | {w} | {run} | {c['n']} | {ms['median']:.3f} "
                             f"[{ms['lo']:.3f}-{ms['hi']:.3f}] | "
                             f"{'-' if fwd is None else f'{fwd:.3f}'} |")
    return "\n".join(lines) + "\n"
