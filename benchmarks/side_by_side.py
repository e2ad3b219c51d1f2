"""Side by side on one GPU: AR, DFlash (head off, our worker), Domino chain, Domino tree, NGRAM.

Every system gets the same fixed request set per concurrency level (native ``/generate``,
token ids from the held-out prompts, greedy, ``ignore_eos``, >= max(64, 4 x concurrency)
requests, warm-up excluded, >= 2 interleaved repeats; ratios printed with their spread), plus
greedy equality against AR with every mismatch analysed as a tie or not. The method is in
``domino_sglang/bench/side_by_side.py``; results (JSON + Markdown with device, versions, the
commit and its dirty state, the command) go to ``--out-dir``.

GPU host (after ``source gpu-env.sh ...`` and ``pip install -e . --no-deps``)::

    # tiny pair, all five systems, levels 1 4 16 64 (one 10-minute call)
    python3 benchmarks/side_by_side.py --pair tiny --commit $SHA --out-dir $OUT/sbs
    # 8B-cost pair (built first, < 2 min)
    python3 -m domino_sglang.bench.inflate --src assets/domino-tiny --shape qwen3-8b --out /tmp/p8b
    python3 benchmarks/side_by_side.py --pair /tmp/p8b --systems ar dflash domino ...
    # simulated acceptance (benchmark only: outputs are not the target's)
    python3 benchmarks/side_by_side.py --pair tiny --simulate-acc-len 4 6 7.17 --levels 1 16 64

``--dry-run`` prints the plan and the server commands and starts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from domino_sglang.bench import side_by_side as sbs  # noqa: E402
from domino_sglang.bench.harness import (add_memory_plan_args,  # noqa: E402
                                         add_server_run_args, gpu_info, int_list_type,
                                         pair_script_parser,
                                         parse_recording_argv)
from domino_sglang.bench.systems import SYSTEMS, TINY, parse_tree_configs  # noqa: E402


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 4,6,7.17: {text!r}") from exc


def _tree_configs(text: str) -> list[tuple[int, int]]:
    try:
        return parse_tree_configs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


_ints = int_list_type("levels", "1,4,16,64")


def build_parser() -> argparse.ArgumentParser:
    p, a = pair_script_parser(__doc__)
    a("--systems", nargs="+", default=None, choices=list(SYSTEMS),
      help="default: all five for --pair tiny, ar dflash domino for another pair")
    a("--levels", type=_ints, default=[1, 4, 16, 64],
      help="concurrency levels, measured in the order given (the most important first: a "
      "level the time budget cannot fit is skipped and the next one tried; tables sort them) "
      "(1,4,16,64)")
    a("--repeats", type=int, default=2, help="measured runs per level and system (>= 2)")
    a("--min-requests", type=int, default=64)
    a("--per-slot", type=int, default=4, help="requests per level = max(min, this x level)")
    a("--max-new-tokens", type=int, default=128)
    a("--warmup", type=int, default=4, help="warm-up requests (at least the level) per system")
    a("--warmup-tokens", type=int, default=16)
    a("--stream", action="store_true", help="streamed /generate: TTFT and true TPOT "
      "(default: plain /generate, TPOT = latency / tokens)")
    a("--prompts", type=Path, default=TINY / "heldout_prompts.jsonl",
      help="jsonl with input_ids (or text, tokenized with the target's tokenizer)")
    a("--eq-prompts", type=int, default=64)
    a("--eq-max-new-tokens", type=int, default=128)
    a("--eq-concurrency", type=int, default=16)
    a("--prefill-probe", type=int, default=0, metavar="N",
      help="before each wave's levels, N requests of one output token at concurrency 1 to "
      "each server in turn (the prefill path's cost per request; 0 = off)")
    a("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    a("--tie-reference", default=str(TINY / "target"),
      help="model whose fp32 CPU logits give the logit magnitude at a mismatch (the tiny "
      "target also for pairs inflated from it); 'none': legacy fixed thresholds")
    a("--logit-magnitude", type=float, default=None,
      help="use this |logit| for the ulp instead of a reference model")
    a("--tie-ulps", type=float, default=1.0, help="tie threshold in ulps (default 1)")
    a("--simulate-acc-len", type=_floats, default=None,
      help="e.g. 4,6,7.17: dflash/domino servers per value with SGLANG_SIMULATE_ACC_LEN "
      "(SIMULATED numbers, no equality phase)")
    a("--simulate-method", default=None,
      help="SGLANG_SIMULATE_ACC_METHOD (default: SGLang's, match-expected)")
    a("--tree-topk", type=int, default=4, help="tree branching of domino_tree (default 4)")
    a("--tree-budget", type=int, default=32,
      help="tree node budget of domino_tree (default 32)")
    a("--tree-configs", type=_tree_configs, default=None, metavar="KxB,...",
      help="the tree sweep: one domino_tree server per TOPKxBUDGET, e.g. 2x16,4x32,8x64, "
      "named domino_tree-4x32 etc.; the table then gives each one's ratio to chain Domino and "
      "the fastest per level (default: one server, --tree-topk x --tree-budget)")
    a("--adaptive-trace", action="store_true",
      help="Domino (adaptive) servers write their per-round trace (DOMINO_ADAPTIVE_TRACE) "
      "into --out-dir; the report adds its summary by bucket, width and rounds since a switch")
    a("--tree-style", choices=["flags", "env"], default="flags",
      help="tree mode through --speculative-eagle-topk/--speculative-num-draft-tokens "
      "(flags) or DOMINO_TREE_TOPK/BUDGET (env)")
    add_memory_plan_args(
        a, fraction_help="default: from the memory plan (sum of the wave's needs / GPU memory "
        "+ 0.05)", kv_help="KV cap per server (default: largest level x (longest prompt + "
        "tokens + 2 x verify width) x 1.25)", budget_s=540.0, budget_help="whole run from "
        "start; a level that would overrun is skipped (recorded) and the next one in "
        "--levels order tried", reserve_s=20.0,
        startup_timeout_s=300.0)
    a("--request-timeout-s", type=float, default=300.0)
    add_server_run_args(a, out_name="side_by_side", base_port=31300)
    return p


def parse(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = parse_recording_argv(p, argv, __file__)
    if args.systems is None:
        args.systems = list(SYSTEMS) if args.pair == "tiny" else ["ar", "dflash", "domino"]
    if args.simulate_acc_len and args.systems == list(SYSTEMS):
        args.systems = ["ar", "dflash", "domino"]
    if args.repeats < 2:
        p.error(f"--repeats {args.repeats}: at least 2 (the spread needs two runs)")
    if args.tree_configs and "domino_tree" not in args.systems:
        p.error("--tree-configs: needs domino_tree in --systems")
    if args.tree_configs and args.simulate_acc_len:
        p.error("--tree-configs: not with --simulate-acc-len (simulated acceptance runs chain "
                "mode only)")
    if args.prefill_probe < 0:
        p.error(f"--prefill-probe {args.prefill_probe}: must be >= 0")
    for name in ("min_requests", "max_new_tokens", "eq_prompts", "eq_max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.gpu_mem_gb is None:
        g = gpu_info()
        args.gpu_mem_gb = (g["gpus"][0]["memory_total_mib"] * 2**20 / 1e9
                           if g.get("available") else 80.0)
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse(argv)
    launcher = shlex.split(args.launcher) if args.launcher else None
    if args.dry_run:
        plan = sbs.make_plan(args)
        plan.pop("_prompts")
        print(json.dumps({k: v for k, v in plan.items() if k != "waves"}, indent=1,
                         default=str))
        for i, w in enumerate(plan["waves"]):
            print(f"\n# wave {i} (needs ~{w['need_gb']} GB of {args.gpu_mem_gb:.0f} GB)")
            for s in w["servers"]:
                print(sbs.shown(s, launcher))
        return 0
    data = sbs.run(args, launcher)
    v = data.get("verdict", {})
    ok = (not data.get("errors") and not v.get("servers_failed")
          and v.get("equality_ok") in (True, None))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
