"""Benchmark the Triton kernels at Qwen3-8B dimensions against the byte floor and the reference.

    python benchmarks/bench_kernels.py --out benchmarks/results

For every batch size: exactness of the fused greedy head against ``domino_head_ref`` (tokens),
then median (p20/p80) times with ``triton.testing.do_bench`` of

* the fused head (``domino_head_triton``) replayed from a CUDA graph, for a small sweep of the
  correction kernel's launch settings (the best is reported), and launched eagerly;
* the PyTorch reference ``domino_head_ref`` (fp32 weights, so its casts are no-ops) eagerly and
  from a CUDA graph; it includes the base-logit GEMM, timed alone beside it;
* the tree kernels at 64 nodes (build, SGLang layout, greedy and sampled verification),

each beside its byte floor = bytes that must be read / measured device copy bandwidth.
Writes kernels_bench.json and kernels_bench.md under --out, with the provenance (command, commit
from --commit / $DOMINO_COMMIT / git, GPU, versions); rewritten after every row and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from domino_sglang.bench.harness import Run, parse_recording_argv, provenance_lines
from domino_sglang.core.drafter import HeadWeights
from domino_sglang.core.tree import tree_num_nodes
from domino_sglang.kernels.domino_head import (DominoHeadWorkspace, domino_head_triton,
                                               prepare_head)
from domino_sglang.kernels.domino_head_fast import domino_head_launch
from domino_sglang.kernels.tree_build import (TreeBuildWorkspace, tree_build_triton,
                                              tree_layout_triton)
from domino_sglang.kernels.tree_verify import tree_verify_triton
from domino_sglang.ops.domino_head import domino_head_ref

QUANTILES = [0.5, 0.2, 0.8]
DT = torch.bfloat16  # weights and hidden states (--dtype)
DEFAULT_VARIANTS = "default,wide,fused,fused_pdl"


def _bench(fn):
    med, p20, p80 = do_bench(fn, warmup=25, rep=200, quantiles=QUANTILES)
    return {"median_ms": med, "p20_ms": p20, "p80_ms": p80}


def _graph(fn):
    """Capture fn (already compiled by a warm-up call) in a CUDA graph; returns replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def copy_bandwidth_gbs() -> float:
    n = 1 << 30  # 1 GiB each way
    x = torch.empty(n, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    t = do_bench(lambda: y.copy_(x), warmup=10, rep=100)
    return 2 * n / (t * 1e-3) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results", help="output folder (default %(default)s)")
    ap.add_argument("--batch-sizes", default="1,16,64", help="head batch sizes (default %(default)s)")
    ap.add_argument("--tree-batch-sizes", default="1,16",
                    help="tree batch sizes, '' for none (default %(default)s)")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--gru", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--topk", type=int, default=8, help="tree branching (default %(default)s)")
    ap.add_argument("--budget", type=int, default=64, help="tree node budget (default %(default)s)")
    ap.add_argument("--seq-len", type=int, default=4096, help="prefix length for the tree layout")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help="fused-head variants to time (graph replay), comma separated; "
                         "'default' also runs the correction config sweep. "
                         "(default %(default)s)")
    ap.add_argument("--gi-tables", default="fp32",
                    help="GRU input table modes to time the head with (DOMINO_HEAD_GI_TABLE: "
                         "fp32, bf16, none), comma separated; beyond fp32 each adds a row per "
                         "batch size with its memory, its graph-replay time (default launch "
                         "sequence and the fastest table variant) and its token mismatches vs "
                         "the spec (default %(default)s)")
    ap.add_argument("--serving-batch-sizes", default="",
                    help="batch sizes for the head as a server runs it, comma separated ('' for "
                         "none): the base-logit GEMM as served (bf16 operands, fp32 output) beside "
                         "a bf16-output GEMM, and PreparedDominoHead.propose end to end (GEMM + "
                         "head), bound for this batch and for 256 requests as the worker binds it, "
                         "graph replay (default none)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the default variant's sweep")
    ap.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16",
                    help="weights and hidden states (fp16 runs the head's dot mode 4; default "
                    "%(default)s)")
    ap.add_argument("--skip-ref", action="store_true", help="skip timing the PyTorch reference")
    ap.add_argument("--commit", default=None,
                    help="the commit that ran (else $DOMINO_COMMIT, else git)")
    args = parse_recording_argv(ap, argv, __file__)
    global DT
    DT = getattr(torch, args.dtype)
    # SIGTERM (an outer `timeout`) -> Terminated: the rows measured so far are written
    with Run(Path(args.out), "kernels_bench", args.argv, args.commit, render=_markdown,
             stem="kernels_bench") as run:
        meta = run.data["meta"]
        run.data.update({
            "device": None, "sms": None, "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version(),
            "date": meta["date"], "command": meta["command"], "git_rev": meta["git"]["commit"],
            "config": vars(args), "copy_bandwidth_GBps": None, "head": [], "tree": []})
        if not torch.cuda.is_available():
            run.data["errors"]["run"] = "no CUDA device: the kernels are benchmarked on a GPU"
            print(run.data["errors"]["run"], file=sys.stderr)
            return 2
        _run(args, run)
    print(run.paths[1].read_text())
    return 1 if run.data["errors"] else 0


def _run(args, run: Run) -> None:
    """Every row into ``run.data`` (the result files are rewritten after each)."""
    res = run.data
    d, v, g, r, k = args.hidden, args.vocab, args.gru, args.rank, args.block
    dev = torch.device("cuda")
    torch.manual_seed(0)
    mk = lambda *s, sc: (torch.randn(*s, device=dev) * sc).to(DT)
    head = HeadWeights(mk(3 * g, d, sc=d ** -0.5), mk(3 * g, g, sc=g ** -0.5),
                       mk(r, d + g, sc=(d + g) ** -0.5), mk(v, r, sc=r ** -0.5 * 2))
    lm, emb = mk(v, d, sc=d ** -0.5 * 2), mk(v, d, sc=1.0)
    weights = prepare_head(head, emb, gi_table_dtype=torch.float32)
    bw = copy_bandwidth_gbs()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    res.update(device=torch.cuda.get_device_name(0), sms=sms, copy_bandwidth_GBps=bw)
    print(f"device {res['device']}, copy bandwidth {bw:.0f} GB/s", flush=True)
    sweep = [{}, {"num_ctas": sms * 2}, {"BLOCK_V": 128, "num_warps": 8},
             {"BLOCK_V": 32, "num_ctas": sms * 4}, {"num_ctas": sms, "BLOCK_V": 64, "num_warps": 8}]
    variants = [x.strip() for x in args.variants.split(",") if x.strip()]
    if args.no_sweep:
        sweep = [{}]
    for bs in [int(x) for x in args.batch_sizes.split(",") if x.strip()]:
        try:
            row = _bench_head(bs, k, d, v, g, r, head, weights, lm, emb, bw, sweep, variants,
                              skip_ref=args.skip_ref)
        except Exception as e:  # keep going: later rows and the tree still get measured
            row = {"batch": bs, "error": repr(e)[:500]}
        res["head"].append(row)
        print(json.dumps(row), flush=True)
        run.write()
    modes = [m.strip() for m in args.gi_tables.split(",") if m.strip()]
    if modes != ["fp32"]:
        res["gi_tables"] = []
        for bs in [int(x) for x in args.batch_sizes.split(",")]:
            for mode in modes:
                try:
                    row = _bench_gi_table(bs, k, d, v, g, r, head, lm, emb, mode)
                except Exception as e:
                    row = {"batch": bs, "mode": mode, "error": repr(e)[:400]}
                res["gi_tables"].append(row)
                print(json.dumps(row), flush=True)
                run.write()
    serving = [int(x) for x in args.serving_batch_sizes.split(",") if x.strip()]
    if serving:
        res["serving"] = []
    for bs in serving:
        try:
            row = _bench_serving(bs, k, d, v, head, lm, emb)
        except Exception as e:
            row = {"batch": bs, "error": repr(e)[:400]}
        res["serving"].append(row)
        print(json.dumps(row), flush=True)
        run.write()
    for bs in [int(x) for x in args.tree_batch_sizes.split(",") if x.strip()]:  # "": no tree
        try:
            res["tree"].append(_bench_tree(bs, k, d, v, g, r, weights, lm, bw, args))
        except Exception as e:
            res["tree"].append({"batch": bs, "error": repr(e)[:500]})
        print(json.dumps(res["tree"][-1]), flush=True)
        run.write()


def _bench_gi_table(bs, k, d, v, g, r, head, lm, emb, mode):
    """The head with GRU input table ``mode`` (fp32 / bf16 / none): the table's MiB, graph-replay
    times of the default launch sequence and (with a table) the "wide" variant, and token
    mismatches vs the spec (bf16 rounds the table once: near ties may flip)."""
    from domino_sglang.ops.domino_head import _gi_dtype

    dev = lm.device
    weights = prepare_head(head, emb, gi_table_dtype=_gi_dtype(mode))
    table = weights.gi_table
    row = {"batch": bs, "mode": mode, "table_mib": 0.0 if table is None
           else table.numel() * table.element_size() / 2 ** 20}
    gen = torch.Generator(device=dev).manual_seed(bs)
    hs = torch.randn(bs, k, d, device=dev, generator=gen).to(DT)
    z = hs[:, : k - 1]
    bonus = torch.randint(0, v, (bs,), device=dev, generator=gen)
    base = z.float() @ lm.float().t()
    ref = domino_head_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=0).tokens
    for name in (("default", "wide") if table is not None else ("default",)):
        ws = DominoHeadWorkspace(bs, k, v, r, g, dev)
        fn = lambda: domino_head_launch(z, base, bonus, weights, ws, pure_prefix_len=0,
                                        variant=name)
        tok = fn().clone()
        row[name] = {**_bench(_graph(fn)), "token_mismatches_vs_ref": int((tok != ref).sum()),
                     "tokens_checked": int(tok.numel())}
    del weights
    torch.cuda.empty_cache()
    return row


def _bench_serving(bs, k, d, v, head, lm, emb, server_max_batch=256):
    """The head as the server runs it (``PreparedDominoHead.propose``: the base-logit GEMM over
    all ``k`` block rows into the static fp32 buffer, then the head), graph replay: the GEMM
    alone with fp32 output (as served) and with bf16 output, and ``propose`` bound for ``bs``
    and for ``server_max_batch`` requests (the worker binds the head to max(graph batch sizes,
    max running requests, 256)); tokens vs the spec."""
    from domino_sglang.ops.domino_head import PreparedDominoHead

    dev = lm.device
    gen = torch.Generator(device=dev).manual_seed(1000 + bs)
    hs = torch.randn(bs, k, d, device=dev, generator=gen).to(DT)
    bonus = torch.randint(0, v, (bs,), device=dev, generator=gen)
    h2 = hs.reshape(bs * k, d)
    out32 = torch.empty(bs * k, v, device=dev, dtype=torch.float32)
    out16 = torch.empty(bs * k, v, device=dev, dtype=DT)
    row = {"batch": bs, "gemm_rows": bs * k,
           "gemm_fp32_out": _bench(_graph(lambda: torch.mm(h2, lm.t(), out_dtype=torch.float32,
                                                           out=out32))),
           "gemm_bf16_out": _bench(_graph(lambda: torch.mm(h2, lm.t(), out=out16)))}
    del out32, out16
    ref = domino_head_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1).tokens
    for name, mb in (("propose", bs), ("propose_bound_256", max(bs, server_max_batch))):
        op = PreparedDominoHead(lm, emb, head, block_size=k, max_batch=mb, base_logits="fp32")
        out = torch.empty(bs, k - 1, dtype=torch.int64, device=dev)
        fn = lambda: op.propose(hs, bonus, shift_label=True, pure_prefix_len=1, out=out)
        fn()
        tok = out.clone()
        row[name] = {**_bench(_graph(fn)), "max_batch": mb, "MiB": op.nbytes() / 2 ** 20,
                     "token_mismatches_vs_ref": int((tok != ref).sum()),
                     "tokens_checked": int(tok.numel())}
        del op
        torch.cuda.empty_cache()
    return row


def _bench_variant(bs, k, v, r, g, weights, z, base, bonus, ref_tok, name):
    """One fused-head variant: eager exactness (tokens vs the spec), then graph replay."""
    import time

    dev = z.device
    try:
        ws = DominoHeadWorkspace(bs, k, v, r, g, dev)
        fn = lambda: domino_head_launch(z, base, bonus, weights, ws, pure_prefix_len=0,
                                        variant=name)
        fn()  # compile
        torch.cuda.synchronize()
        ws.tokens.fill_(-1)
        t0 = time.perf_counter()
        tok = fn()
        torch.cuda.synchronize()
        out = {"eager_once_ms": (time.perf_counter() - t0) * 1e3,
               "token_mismatches_vs_ref": int((tok != ref_tok).sum())}
        t = _bench(_graph(fn))
        out.update(t)
        out["tokens_equal_after_replay"] = bool((ws.tokens[:bs] == ref_tok).all())
        return out
    except Exception as e:
        return {"error": repr(e)[:400]}


def _bench_head(bs, k, d, v, g, r, head, weights, lm, emb, bw, sweep, variants=(),
                skip_ref=False):
    dev = lm.device
    hs = (torch.randn(bs, k, d, device=dev)).to(DT)
    z = hs[:, : k - 1]
    bonus = torch.randint(0, v, (bs,), device=dev)
    base = z.float() @ lm.float().t()
    row = {"batch": bs}
    # exactness vs the spec
    ref = domino_head_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=0)
    ws = DominoHeadWorkspace(bs, k, v, r, g, dev)
    tok = domino_head_triton(z, base, bonus, weights, ws, pure_prefix_len=0)
    row["token_mismatches_vs_ref"] = int((tok != ref.tokens).sum())
    row["tokens_checked"] = tok.numel()
    ref_tok = ref.tokens.clone()
    del ref
    row["variants"] = {}
    for name in variants:
        if name == "default":
            continue  # the sweep below is the default variant
        row["variants"][name] = _bench_variant(bs, k, v, r, g, weights, z, base, bonus, ref_tok,
                                               name)
        print(json.dumps({"batch": bs, name: row["variants"][name]}), flush=True)
    # fused head: sweep the correction launch settings, graph replay
    fused = []
    for cfg in sweep:
        try:
            ws = DominoHeadWorkspace(bs, k, v, r, g, dev, corr_override=cfg)
            fn = lambda: domino_head_triton(z, base, bonus, weights, ws, pure_prefix_len=0)
            fn()
            t = _bench(_graph(fn))
            ok = bool((ws.tokens[:bs] == tok).all())
            fused.append({"config": cfg, **t, "tokens_equal": ok})
        except Exception as e:  # a config that fails to compile/launch is recorded, not fatal
            fused.append({"config": cfg, "error": repr(e)[:300]})
    row["fused_sweep"] = fused
    good = [f for f in fused if "median_ms" in f and f["tokens_equal"]] or \
        [f for f in fused if "median_ms" in f]
    best = min(good, key=lambda f: f["median_ms"])
    row["fused_graph"] = best
    ws = DominoHeadWorkspace(bs, k, v, r, g, dev, corr_override=best["config"])
    row["fused_eager"] = _bench(lambda: domino_head_triton(z, base, bonus, weights, ws,
                                                           pure_prefix_len=0))
    row["variants"]["default"] = {**best, "token_mismatches_vs_ref": row["token_mismatches_vs_ref"]}
    if skip_ref:
        row["ref_eager"] = row["ref_graph"] = row["ref_base_gemm_alone"] = {"error": "skipped"}
        _floors(row, bs, k, d, v, g, r, base, bw)
        return row
    # reference (fp32 weights: its .float() casts are no-ops), includes the base GEMM
    head32 = HeadWeights(*(t.float() for t in (head.w_ih, head.w_hh, head.w1, head.w2)))
    lm32, emb32 = lm.float(), emb.float()
    ref_fn = lambda: domino_head_ref(hs, bonus, lm32, emb32, head32, shift_label=True,
                                     pure_prefix_len=0)
    row["ref_eager"] = _bench(ref_fn)
    try:
        row["ref_graph"] = _bench(_graph(ref_fn))
    except Exception as e:
        row["ref_graph"] = {"error": repr(e)[:300]}
    row["ref_base_gemm_alone"] = _bench(lambda: z.float() @ lm32.t())
    del head32, lm32, emb32
    _floors(row, bs, k, d, v, g, r, base, bw)
    return row


def _floors(row, bs, k, d, v, g, r, base, bw):
    steps = k - 1
    read = steps * (v * r * 2 + bs * v * base.element_size() + 3 * g * g * 2 + r * g * 2
                    + bs * 3 * g * 4) + r * d * 2 + bs * steps * d * 2
    row["floor_bytes"] = read
    row["floor_ms"] = read / (bw * 1e9) * 1e3
    row["w2_only_floor_ms"] = steps * v * r * 2 / (bw * 1e9) * 1e3


def _bench_tree(bs, k, d, v, g, r, weights, lm, bw, args):
    dev = lm.device
    n = tree_num_nodes(k, args.topk, args.budget)
    hs = torch.randn(bs, k, d, device=dev).to(DT)
    z = hs[:, : k - 1]
    bonus = torch.randint(0, v, (bs,), device=dev)
    base = z.float() @ lm.float().t()
    ws = TreeBuildWorkspace(bs, k, v, r, g, args.topk, n, dev)
    fn = lambda: tree_build_triton(z, base, bonus, weights, ws, pure_prefix_len=0)
    fn()
    row = {"batch": bs, "nodes": n, "topk": args.topk}
    row["build_graph"] = _bench(_graph(fn))
    depths = -(-(n - 1) // args.topk)
    rows = bs * args.topk
    # per depth: W2 once, base rows, the frontier's logits written once and read once by the
    # split top-k, W_hh
    per_depth = v * r * 2 + bs * v * 4 + rows * v * 4 * 2 + 3 * g * g * 2
    row["build_floor_ms"] = depths * per_depth / (bw * 1e9) * 1e3
    row["build_w2_floor_ms"] = depths * v * r * 2 / (bw * 1e9) * 1e3
    parents = ws.parents[:bs].clone()
    tokens = ws.tokens[:bs].clone()
    seq = torch.full((bs,), args.seq_len, device=dev, dtype=torch.long)
    mask = torch.empty(bs * n * (args.seq_len + n), dtype=torch.bool, device=dev)
    lay = lambda: tree_layout_triton(parents, seq, mask)
    lay()
    row["layout_graph"] = _bench(_graph(lay))
    row["layout_floor_ms"] = mask.numel() / (bw * 1e9) * 1e3  # bytes written
    target_logits = torch.randn(bs, n, v, device=dev)
    greedy = lambda: tree_verify_triton(tokens, parents, target_logits=target_logits)
    greedy()
    row["verify_greedy_graph"] = _bench(_graph(greedy))
    row["verify_greedy_floor_ms"] = target_logits.numel() * 4 / (bw * 1e9) * 1e3
    probs = torch.softmax(target_logits, -1)
    u, uf = torch.rand(bs, n, device=dev), torch.rand(bs, device=dev)
    wsv = torch.empty(bs, v, device=dev)
    samp = lambda: tree_verify_triton(tokens, parents, target_probs=probs, uniforms=u,
                                      uniform_final=uf, workspace=wsv)
    samp()
    row["verify_sample_graph"] = _bench(_graph(samp))
    row["verify_sample_floor_ms"] = bs * v * 4 * 2 / (bw * 1e9) * 1e3  # >= one row, 2 passes
    return row


def _fmt(t):
    return f"{t['median_ms']:.3f} ({t['p20_ms']:.3f}/{t['p80_ms']:.3f})" if "median_ms" in t \
        else "error"


def _markdown(res):
    bw = res.get("copy_bandwidth_GBps")
    lines = [f"# Kernel benchmarks ({res['device']}, {res['date']})", "",
             *provenance_lines(res.get("meta") or {}),
             f"- weights and hidden states: {(res.get('config') or {}).get('dtype', 'bfloat16')}",
             f"- torch {res['torch']}, triton {res['triton']}, copy bandwidth "
             + ("-" if bw is None else f"{bw:.0f}") + " GB/s", ""]
    if res.get("errors"):
        lines += [f"Errors: {res['errors']}", ""]
    lines += ["Times: median (p20/p80) ms, `triton.testing.do_bench`. Floor = bytes read / copy "
              "bandwidth.", "", "## Fused greedy head (K=16, 15 proposals, full vocabulary)", "",
              "| B | fused, graph | fused, eager | floor | W2-only floor | ref eager | ref graph | "
              "ref base GEMM alone | tokens vs ref |", "|---|---|---|---|---|---|---|---|---|"]
    for h in [x for x in res["head"] if "error" not in x]:
        lines.append(f"| {h['batch']} | {_fmt(h['fused_graph'])} | {_fmt(h['fused_eager'])} | "
                     f"{h['floor_ms']:.3f} | {h['w2_only_floor_ms']:.3f} | {_fmt(h['ref_eager'])} | "
                     f"{_fmt(h['ref_graph'])} | {_fmt(h['ref_base_gemm_alone'])} | "
                     f"{h['token_mismatches_vs_ref']} / {h['tokens_checked']} mismatches |")
    ok = [x for x in res["head"] if "error" not in x]
    for h in res["head"]:
        if "error" in h:
            lines.append(f"| {h['batch']} | error: {h['error'][:200]} |")
    labels = list(dict.fromkeys(lb for h in ok for lb in h.get("variants", {})))
    lines += ["", "## Fused greedy head variants (graph replay, median (p20/p80) ms; "
              "token mismatches vs the spec)", "",
              "| variant | " + " | ".join(f"B={h['batch']}" for h in ok) + " |",
              "|---|" + "---|" * len(ok)]
    for lb in labels:
        cells = []
        for h in ok:
            x = h["variants"].get(lb, {"error": "not run"})
            if "median_ms" in x:
                cells.append(f"{_fmt(x)}, {x.get('token_mismatches_vs_ref', '?')} mism.")
            else:
                cells.append("error: " + str(x.get("error", x))[:80])
        lines.append(f"| {lb} | " + " | ".join(cells) + " |")
    lines += ["", "Best correction-kernel config per batch: " + ", ".join(
        f"B{h['batch']}: {h['fused_graph']['config'] or 'default'}" for h in ok), "",
        "## Tree kernels (graph replay)", "",
        "| B | N | build | build floor (W2-only) | layout | layout floor | verify greedy | floor | "
        "verify sampled | floor |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in res["tree"]:
        if "error" in t:
            lines.append(f"| {t['batch']} | error: {t['error'][:200]} |")
            continue
        lines.append(f"| {t['batch']} | {t['nodes']} | {_fmt(t['build_graph'])} | "
                     f"{t['build_floor_ms']:.3f} ({t['build_w2_floor_ms']:.3f}) | "
                     f"{_fmt(t['layout_graph'])} | {t['layout_floor_ms']:.3f} | "
                     f"{_fmt(t['verify_greedy_graph'])} | {t['verify_greedy_floor_ms']:.3f} | "
                     f"{_fmt(t['verify_sample_graph'])} | {t['verify_sample_floor_ms']:.3f} |")
    if res.get("serving"):
        lines += ["", "## The head as served (PreparedDominoHead.propose; graph replay, median "
                  "(p20/p80) ms)", "",
                  "| B | GEMM rows | base GEMM, fp32 out (served) | base GEMM, bf16 out | propose "
                  "(bound for B) | propose (bound for 256) | MiB (B / 256) | mismatches |",
                  "|---|---|---|---|---|---|---|---|"]
        for t in res["serving"]:
            if "error" in t:
                lines.append(f"| {t['batch']} | error: {t['error'][:200]} |")
                continue
            p, q = t["propose"], t["propose_bound_256"]
            lines.append(f"| {t['batch']} | {t['gemm_rows']} | {_fmt(t['gemm_fp32_out'])} | "
                         f"{_fmt(t['gemm_bf16_out'])} | {_fmt(p)} | {_fmt(q)} | "
                         f"{p['MiB']:.0f} / {q['MiB']:.0f} | {p['token_mismatches_vs_ref']}/"
                         f"{p['tokens_checked']}, {q['token_mismatches_vs_ref']}/"
                         f"{q['tokens_checked']} |")
    if res.get("gi_tables"):
        lines += ["", "## GRU input table modes (DOMINO_HEAD_GI_TABLE; graph replay, median "
                  "(p20/p80) ms; token mismatches vs the spec)", "",
                  "| B | mode | table MiB | default launches | wide |", "|---|---|---|---|---|"]
        for t in res["gi_tables"]:
            if "error" in t:
                lines.append(f"| {t['batch']} | {t['mode']} | error: {t['error'][:200]} |")
                continue
            cell = lambda x: (f"{_fmt(x)}, {x['token_mismatches_vs_ref']}/{x['tokens_checked']}"
                              " mism." if x else "-")
            lines.append(f"| {t['batch']} | {t['mode']} | {t['table_mib']:.0f} | "
                         f"{cell(t.get('default'))} | {cell(t.get('wide'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
