"""Host cost of a decode round's KV reservation: SGLang 0.5.17's ``DFlashDraftInputV2.
prepare_for_decode`` vs Domino's ``DominoDraftInputV2.prepare_for_decode`` (issue #14 item 1).

    python benchmarks/bench_host_prepare.py --out benchmarks/results

Both run on the same stand-in batch (``domino_sglang.bench.host_batch``: requests with mixed
watermarks and top-k, a page-size-1 allocator) at each batch size, alternating, ``--repeats``
rounds of ``--iters`` calls each; the median, min and max per call in microseconds. The
``req_to_token`` write (a Triton kernel launch in a server, the same call on both paths) is
replaced by a no-op here so that only the host work that differs is timed; ``--device cuda``
puts the batch's tensors on the GPU (pinned buffers, real host-to-device copies). Writes
``host_prepare_<stamp>.json`` / ``.md`` with the provenance.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
try:  # ``import sglang`` needs torchvision, which has no build for the CPU torch
    import torchvision  # noqa: F401
except Exception:  # noqa: BLE001 - the CPU machine: the test suite's stub (as tests/ use it)
    sys.path.insert(0, str(ROOT / "tests" / "sglang_plugin"))
    import _tv_mock

    _tv_mock.install()
    print("torchvision not importable: using tests/sglang_plugin/_tv_mock.py", file=sys.stderr)

from domino_sglang.bench.harness import Run, parse_recording_argv, provenance_lines  # noqa: E402
from domino_sglang.bench.host_batch import draft_inputs, make_batch, patched_sglang  # noqa: E402


def _noop_assign(*_args, **_kwargs):
    return None


def time_calls(which: str, bs: int, block: int, iters: int, device: str) -> float:
    """Seconds per ``prepare_for_decode`` call, over ``iters`` fresh draft inputs (one per
    round, as in a server) on one batch whose committed lengths grow between calls."""
    batch = make_batch(bs, seed=bs, block=block, device=device)
    inputs = [draft_inputs(bs, device)[0 if which == "sglang" else 1] for _ in range(iters)]
    sync = (lambda: __import__("torch").cuda.synchronize()) if device == "cuda" else (lambda: 0)
    sync()
    t0 = time.perf_counter()
    for inp in inputs:
        inp.prepare_for_decode(batch)
        for r in batch.reqs:
            r.kv_committed_len += 3
    sync()
    return (time.perf_counter() - t0) / iters


def render(data: dict) -> str:
    lines = ["# Host cost of prepare_for_decode: SGLang's DFlash vs Domino's", ""]
    lines += provenance_lines(data["meta"])
    lines += ["", f"- device of the batch tensors: {data['device']}; block {data['block']}; "
              f"{data['repeats']} repeats x {data['iters']} calls", "",
              "| batch | SGLang us/call (median, min-max) | Domino us/call (median, min-max) "
              "| SGLang / Domino |", "| ---: | ---: | ---: | ---: |"]
    for row in data["rows"]:
        s, d = row["sglang_us"], row["domino_us"]
        lines.append(f"| {row['batch']} | {s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f}) | "
                     f"{d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f}) | "
                     f"{s['median'] / d['median']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,16,64,256", help="default %(default)s")
    ap.add_argument("--block", type=int, default=16, help="draft block (default %(default)s)")
    ap.add_argument("--iters", type=int, default=200, help="calls per repeat (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=7, help="default %(default)s")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--commit", default=None, help="commit to record (default: git)")
    ap.add_argument("--out", default="benchmarks/results", help="default %(default)s")
    args = parse_recording_argv(ap, argv, __file__)
    try:
        sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    except ValueError:
        ap.error(f"--batch-sizes {args.batch_sizes!r}: expected comma-separated integers")
    if not sizes or min(sizes) < 1 or args.iters < 1 or args.repeats < 1 or args.block < 1:
        ap.error("--batch-sizes, --iters, --repeats and --block must be positive")
    with Run(Path(args.out), "host_prepare", args.argv, args.commit, render=render) as run:
        run.data.update(device=args.device, block=args.block, iters=args.iters,
                        repeats=args.repeats, rows=[])
        with patched_sglang(args.block, assign=_noop_assign):
            for bs in sizes:
                t = {"sglang": [], "domino": []}
                for _ in range(args.repeats):
                    for which in t:
                        t[which].append(1e6 * time_calls(which, bs, args.block, args.iters,
                                                         args.device))
                row = {"batch": bs}
                for which, xs in t.items():
                    row[f"{which}_us"] = {"median": statistics.median(xs), "min": min(xs),
                                          "max": max(xs), "all": xs}
                run.data["rows"].append(row)
                print(f"batch {bs}: SGLang {row['sglang_us']['median']:.1f} us, "
                      f"Domino {row['domino_us']['median']:.1f} us per call", flush=True)
    print("wrote", ", ".join(str(p) for p in run.paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
