"""End to end on a GPU: a plain SGLang server vs ``--speculative-algorithm domino`` (+ a stock
DFLASH server on the same draft checkpoint as a control), same target.

Checks (written to ``--out-dir`` as ``e2e_<stamp>.json`` + ``.md`` with the provenance:
command, commit (``--commit`` / ``$DOMINO_COMMIT``), GPU, versions; also on SIGTERM; exit code 1
if one fails):

* greedy completions (plain vs domino) on every prompt: chat-shaped and plain, short and long
  prompts, EOS inside a verify block; every mismatch is analysed at its first differing token
  and must be a near-tie: |logit gap| within one ulp of the dtype at the logits' magnitude (the
  magnitude from the target run in fp32 on the CPU, ``bench.ties.hf_logits_fn``), finish
  reasons compared where one output stops early;
* sampled completions (T=0.7, top-p 0.9) finish with ``length`` or ``stop``;
* 16 concurrent streams finish with ``length`` or ``stop`` (an aborted stream is counted as
  aborted, not completed);
* after the load and ``/flush_cache``, ``/v1/loads`` reports 0 used KV tokens;
* ``/server_info`` reports ``speculative_algorithm=DOMINO`` and an accept length.

Without ``--target``/``--draft`` it builds a tiny random Qwen3 target and a random Domino drafter
(``domino_sglang.hf.tiny``); servers run with ``--skip-tokenizer-init`` and token ids, so no
tokenizer is needed. "Chat" prompts are token-id sequences shaped like a chat template
(system/user/assistant marker ids). A trained pair: ``--target DIR --draft DIR``.

Usage (on the H200, after ``source gpu-env.sh ...`` and ``pip install -e . --no-deps``)::

    python3 benchmarks/e2e_gpu.py --out-dir benchmarks/results

Tensor parallel (docs/tp.md; every server, plain included, gets ``--tp-size N``)::

    python3 benchmarks/e2e_gpu.py --target assets/domino-tiny/target \
        --draft assets/domino-tiny/drafter-domino --block-size 16 --dtype bfloat16 \
        --tp-size 2 --no-dflash-control --out-dir $OUT

Tree mode on SGLang's flags (docs/tree_mode.md; the Domino server only)::

    python3 benchmarks/e2e_gpu.py --target assets/domino-tiny/target \
        --draft assets/domino-tiny/drafter-domino --block-size 16 --tree-topk 4 \
        --tree-budget 32 --no-dflash-control --out-dir $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from domino_sglang.bench.client import call_stream, error_message, http_json, load_summary
from domino_sglang.bench.harness import (Run, environment_fields, parse_recording_argv,
                                         provenance_lines, run_phase)
from domino_sglang.bench.reliability import checks_markdown
from domino_sglang.bench.servers import (Server, server_flags, sglang_command, spec_flags,
                                         start_all)
from domino_sglang.bench.systems import tree_flags
from domino_sglang.bench.ties import (first_difference, hf_logits_fn, summarize_ties,
                                      tie_reports)


# ---- models ---------------------------------------------------------------------------------
def build_tiny_pair(workdir: Path, block_size: int, embed_scale: float, seed: int) -> dict:
    import torch

    from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target

    target = build_tiny_target(seed=seed)
    with torch.no_grad():
        # a larger token embedding makes the residual stream token-dominated: wider greedy
        # margins, so fp16 kernel-order noise (decode vs verify) rarely flips an argmax
        target.model.embed_tokens.weight.mul_(embed_scale)
        # EOS: a token the model predicts now and then (the 4th most frequent argmax), so
        # that greedy completions stop mid-block
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(5, target.config.vocab_size - 1, (32, 48), generator=g)
        top = target(ids).logits.argmax(-1).flatten().bincount(
            minlength=target.config.vocab_size)
        top[target.config.vocab_size - 1] = 0  # never the mask token
        eos = int(top.argsort(descending=True)[3])
    target.config.eos_token_id = eos
    target.generation_config.eos_token_id = eos
    tdir, ddir = workdir / "target", workdir / "draft"
    target.save_pretrained(tdir)
    drafter = build_tiny_drafter(target, block_size=block_size)
    drafter.save_pretrained(ddir)
    return {"target": str(tdir), "draft": str(ddir), "eos_token_id": eos,
            "vocab_size": target.config.vocab_size, "embed_scale": embed_scale}


def _finish_type(finish) -> str | None:
    return finish.get("type") if isinstance(finish, dict) else finish


def _finished(finish) -> bool:
    """A request that ended normally: max tokens reached or a stop token (not aborted)."""
    return _finish_type(finish) in ("length", "stop")


def _aborted(finish) -> bool:
    return _finish_type(finish) == "abort"


# ---- workload -------------------------------------------------------------------------------
def make_prompts(n: int, vocab: int, eos: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = [t for t in range(5, vocab - 1) if t != eos]
    sys_m, user_m, asst_m = 2, 3, 4  # chat-template marker ids
    prompts = []
    for i in range(n):
        long = i % 3 == 2
        length = rng.randint(300, 900) if long else rng.randint(3, 40)
        body = [rng.choice(words) for _ in range(length)]
        chat = i % 2 == 1
        ids = ([sys_m] + body[:8] + [user_m] + body[8:] + [asst_m]) if chat else body
        prompts.append({"input_ids": ids, "kind": ("chat" if chat else "plain")
                        + ("-long" if long else "-short"),
                        "max_new_tokens": rng.choice([24, 32, 48])})
    return prompts


def generate(server: Server, prompt: dict, sampling: dict, timeout: float = 120.0) -> dict:
    out = http_json(server.url + "/generate", {
        "input_ids": prompt["input_ids"],
        "sampling_params": {"max_new_tokens": prompt["max_new_tokens"], **sampling}},
        timeout=timeout)
    meta = out.get("meta_info", {})
    return {"output_ids": out.get("output_ids"), "finish_reason": meta.get("finish_reason"),
            "completion_tokens": meta.get("completion_tokens"),
            "spec_verify_ct": meta.get("spec_verify_ct")}


def run_checks(servers: dict[str, Server], info: dict, args, res: dict) -> dict:
    res["models"] = info
    prompts = make_prompts(args.num_prompts, info["vocab_size"], info["eos_token_id"], args.seed)
    greedy = {"temperature": 0.0}
    run_phase(res, "greedy", lambda: _greedy_phase(servers, info, args, res, prompts, greedy))
    run_phase(res, "streams", lambda: _streams_phase(servers, args, res, prompts))
    run_phase(res, "loads", lambda: _loads_phase(servers, res))
    # last: a sampled request once hung on the Domino server (2026-11-29 04:55 run); each server
    # gets one first, in parallel and with a timeout, so a hang is attributed and bounded
    run_phase(res, "sampled", lambda: _sampled_phase(servers, info, args, res, prompts))
    return res


def _greedy_phase(servers, info, args, res, prompts, greedy):
    def all_greedy(name):
        return [generate(servers[name], p, greedy) for p in prompts]

    with ThreadPoolExecutor(len(servers)) as pool:  # servers in parallel, prompts in order
        outs = dict(zip(servers, pool.map(all_greedy, list(servers))))
    plain = outs["plain"]
    block = args.block_size
    # the logits' magnitude at a mismatch (fp32 on the CPU): the dtype's ulp there is the tie
    # threshold; without a loadable target the legacy fixed thresholds apply (and say so)
    try:
        logits_fn = hf_logits_fn(info["target"])
    except Exception as exc:  # noqa: BLE001 - recorded; the reports then say "legacy_eps"
        logits_fn = None
        res["tie_reference_error"] = f"{type(exc).__name__}: {exc}"
    for name in [s for s in servers if s != "plain"]:
        same = [a["output_ids"] == b["output_ids"] for a, b in zip(plain, outs[name])]
        first_diff = [{"prompt": i, "kind": prompts[i]["kind"],
                       "position": first_difference(a["output_ids"], b["output_ids"])}
                      for i, (a, b) in enumerate(zip(plain, outs[name]))
                      if a["output_ids"] != b["output_ids"]]
        eos_mid = sum(1 for o in outs[name]
                      if o["output_ids"] and o["output_ids"][-1] == info["eos_token_id"]
                      and o["completion_tokens"] % block != 0)
        # near-tie (bf16 rounding) or logic error?
        ties = tie_reports(servers["plain"].url, [p["input_ids"] for p in prompts],
                           [o["output_ids"] for o in plain],
                           [o["output_ids"] for o in outs[name]], args.dtype,
                           limit=len(prompts), logits_fn=logits_fn,
                           ref_finish=[o["finish_reason"] for o in plain],
                           other_finish=[o["finish_reason"] for o in outs[name]])
        res[f"greedy_{name}_vs_plain"] = {
            "identical": sum(same), "total": len(same), "mismatches": len(first_diff),
            "first_differences": first_diff[:10],
            "tie_analysis": ties, "ties": summarize_ties(ties),
            "eos_stops_mid_block": eos_mid,
            "kinds": sorted({p["kind"] for p in prompts}),
            "tokens": sum(len(o["output_ids"] or []) for o in outs[name]),
            "verify_steps": sum(o["spec_verify_ct"] or 0 for o in outs[name])}
    res["greedy_plain_eos_stops"] = sum(
        1 for o in plain if o["output_ids"] and o["output_ids"][-1] == info["eos_token_id"])


def _sampled_phase(servers, info, args, res, prompts):
    params = {"temperature": 0.7, "top_p": 0.9}

    def first(name):
        try:
            o = generate(servers[name], prompts[0], params, timeout=args.sampled_timeout)
            return {"ok": bool(o["output_ids"]), "finish_reason": o["finish_reason"]}
        except Exception as exc:  # a timeout is the finding here
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    with ThreadPoolExecutor(len(servers)) as pool:
        res["sampled_first_request"] = dict(zip(servers, pool.map(first, list(servers))))
    hung = [n for n, r in res["sampled_first_request"].items() if "Timeout" in r.get("error", "")]
    if hung:  # leave the evidence in the logs: Python stacks of the stuck schedulers
        res["stack_dumps"] = {n: servers[n].dump_scheduler_stacks() for n in hung}
        time.sleep(3)
    if not res["sampled_first_request"]["domino"]["ok"]:
        raise RuntimeError("the first sampled request to the Domino server failed")
    dom = servers["domino"]
    sampled = [generate(dom, p, params, timeout=args.sampled_timeout)
               for p in prompts[: args.num_sampled]]
    res["sampled_domino"] = {
        "completed": sum(1 for o in sampled if _finished(o["finish_reason"]) and o["output_ids"]),
        "aborted": sum(1 for o in sampled if _aborted(o["finish_reason"])),
        "total": len(sampled),
        "finish_reasons": sorted({json.dumps(o["finish_reason"]) for o in sampled}),
        "in_vocab": all(0 <= t < info["vocab_size"] for o in sampled for t in o["output_ids"])}


def _streams_phase(servers, args, res, prompts):
    dom = servers["domino"]
    conc = prompts[: args.concurrency]
    with ThreadPoolExecutor(args.concurrency) as pool:
        streams = list(pool.map(lambda p: call_stream(dom.url + "/generate", {
            "input_ids": p["input_ids"],
            "sampling_params": {"max_new_tokens": 64, "temperature": 0.0}}, timeout=300,
            keep=1), conc))
    failed = [error_message(s) for s in streams if s.error or s.status >= 400]
    if failed:  # a transport or HTTP failure ends the phase (recorded as its error)
        raise RuntimeError(f"{len(failed)} of {len(streams)} streams failed: {failed[0]}")
    finishes = [(s.body if isinstance(s.body, dict) else {}).get("meta_info", {})
                .get("finish_reason") for s in streams]
    res["concurrent_streams_domino"] = {
        "completed": sum(1 for f in finishes if _finished(f)),
        "aborted": sum(1 for f in finishes if _aborted(f)),
        "total": len(streams), "chunks": [s.chunks for s in streams]}


def _loads_phase(servers, res):
    for name, srv in servers.items():
        # /server_info first: SGLang 0.5.17's /flush_cache resets the accept-length counters
        si = http_json(srv.url + "/server_info", timeout=120)
        before = http_json(srv.url + "/v1/loads", timeout=120)
        flush = http_json(srv.url + "/flush_cache", {}, timeout=120)
        time.sleep(1.0)
        after = http_json(srv.url + "/v1/loads", timeout=120)
        res[f"loads_{name}"] = {"before_flush": load_summary(before), "flush": str(flush)[:200],
                                "after_flush": load_summary(after)}
        st = (si.get("internal_states") or [{}])[0]
        res[f"server_info_{name}"] = {
            "speculative_algorithm": si.get("speculative_algorithm"),
            "speculative_num_draft_tokens": si.get("speculative_num_draft_tokens"),
            "avg_spec_accept_length": st.get("avg_spec_accept_length"),
            "ready_s": srv.ready_s}


def verdict(res: dict, args) -> dict:
    g = res.get("greedy_domino_vs_plain", {})
    checks = {
        "greedy_every_mismatch_analysed": g.get("ties", {}).get("analysed", 0)
        == g.get("mismatches", -1),
        "greedy_mismatches_all_near_ties": g.get("ties", {}).get("all_near_ties", True),
        "eos_mid_block_seen": g.get("eos_stops_mid_block", 0) > 0,
        "sampled_complete": res.get("sampled_domino", {}).get("completed")
        == res.get("sampled_domino", {}).get("total"),
        "streams_complete": res.get("concurrent_streams_domino", {}).get("completed")
        == args.concurrency,
        "kv_tokens_zero_after_load": res.get("loads_domino", {}).get("after_flush", {})
        .get("num_used_tokens") == 0,
        "accept_length_reported_>1": (res.get("server_info_domino", {})
                                       .get("avg_spec_accept_length") or 0) > 1,
        "algorithm_is_domino": res.get("server_info_domino", {})
        .get("speculative_algorithm") == "DOMINO",
    }
    return checks


SUMMARY_KEYS = ("greedy_domino_vs_plain", "greedy_dflash_vs_plain", "sampled_domino",
                "concurrent_streams_domino", "loads_domino", "server_info_domino",
                "server_info_dflash")


def render_markdown(res: dict) -> str:
    lines = [f"# End to end on a GPU {res.get('started', '')} ({res.get('device', 'GPU')})", "",
             *provenance_lines(res.get("meta") or {}), "",
             f"Servers ready: {res.get('ready_s')}; wall {res.get('wall_s')} s; "
             f"ok: {res.get('ok')}", "", *checks_markdown(res.get("checks"), res.get("error"))]
    for key in SUMMARY_KEYS:
        if key in res:
            body = {k: v for k, v in res[key].items() if k != "tie_analysis"} \
                if isinstance(res[key], dict) else res[key]
            lines += ["", f"## {key}", "", "```", json.dumps(body, default=str)[:3000], "```"]
    errs = {k: v for k, v in res.items() if k.startswith("error_")}
    if errs:
        lines += ["", "## Phase errors", ""] + [f"- {k}: `{v}`" for k, v in errs.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help="target model folder (default: build a tiny random Qwen3)")
    ap.add_argument("--draft", help="Domino drafter folder (default: a tiny random drafter)")
    ap.add_argument("--workdir", default="/tmp/domino_e2e", help="where tiny models are saved")
    ap.add_argument("--out-dir", default="benchmarks/results", help="results + server logs")
    ap.add_argument("--block-size", type=int, default=8, help="draft block (tokens per verify)")
    ap.add_argument("--embed-scale", type=float, default=4.0,
                    help="tiny target: token-embedding scale (wider greedy margins)")
    ap.add_argument("--dtype", default="float16", help="server --dtype (default float16)")
    ap.add_argument("--num-prompts", type=int, default=60)
    ap.add_argument("--num-sampled", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sampled-timeout", type=float, default=40.0,
                    help="seconds per sampled request")
    ap.add_argument("--mem-fraction", type=float, default=0.3,
                    help="--mem-fraction-static per server (servers share the GPU; the KV pool "
                         "itself is capped by --max-total-tokens)")
    ap.add_argument("--max-total-tokens", type=int, default=262144)
    ap.add_argument("--base-port", type=int, default=31000)
    ap.add_argument("--no-dflash-control", action="store_true",
                    help="skip the stock DFLASH server on the same draft checkpoint")
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tp-size", type=int, default=1,
                    help="--tp-size of every server (plain, domino, dflash); needs that many GPUs")
    ap.add_argument("--tree-topk", type=int, default=1,
                    help="> 1: the Domino server in tree mode, on SGLang's flags "
                         "(--speculative-eagle-topk K, --speculative-num-draft-tokens N = the "
                         "node count for --tree-budget, --grammar-backend none); the DFLASH "
                         "control stays a chain (default: 1, chain)")
    ap.add_argument("--tree-budget", type=int, default=32,
                    help="tree node budget with --tree-topk > 1 (default: 32)")
    ap.add_argument("--extra-server-args", default="", help="appended to every server")
    ap.add_argument("--domino-env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="environment of the Domino server only, e.g. DOMINO_SAMPLED_VERIFY=domino")
    ap.add_argument("--commit", default=None,
                    help="the commit that ran (else $DOMINO_COMMIT, else git)")
    args = parse_recording_argv(ap, argv, __file__)
    if args.tree_topk > 1 and any(kv.startswith("DOMINO_TREE_") for kv in args.domino_env):
        ap.error("--tree-topk with --domino-env DOMINO_TREE_*: pass one (the flags are "
                 "SGLang's; the environment variables are deprecated)")
    if args.tree_topk < 1 or args.tree_budget < 2:
        ap.error(f"--tree-topk {args.tree_topk} / --tree-budget {args.tree_budget}: expected "
                 "topk >= 1 and a budget >= 2")
    t_start = time.time()
    # SIGTERM (an outer `timeout`) -> Terminated, caught in _run: the partial results are written
    with Run(Path(args.out_dir), "e2e", args.argv, args.commit, render=render_markdown) as run:
        res = run.data
        res.update({"args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "command": res["meta"]["command"], **environment_fields(res["meta"]),
                    "ok": False})
        res["ok"] = _run(args, run.out_dir, res)
        res["wall_s"] = round(time.time() - t_start, 1)
    print(json.dumps({k: res.get(k) for k in ("ok", "checks", "ready_s", "wall_s", "error")},
                     indent=1, default=str))
    for k in SUMMARY_KEYS:
        if k in res:
            print(k, json.dumps(res[k], default=str))
    print("results:", run.paths[0])
    return 0 if res.get("ok") else 1


def _run(args, out_dir: Path, res: dict) -> bool:
    """Models, servers, checks into ``res``; -> every check passed."""
    if args.target and args.draft:
        cfg = json.loads((Path(args.target) / "config.json").read_text())
        eos = cfg.get("eos_token_id")
        info = {"target": args.target, "draft": args.draft,
                "eos_token_id": eos[0] if isinstance(eos, list) else eos,
                "vocab_size": cfg["vocab_size"]}
    else:
        info = build_tiny_pair(Path(args.workdir), args.block_size, args.embed_scale, args.seed)
    common = server_flags(info["target"], args.dtype, args.mem_fraction, args.max_total_tokens,
                          args.seed, ["--skip-tokenizer-init", "--tp-size", str(args.tp_size),
                                      *args.extra_server_args.split()])
    if args.tp_size > 1:  # the servers inherit these: NVLink multicast stays off (shared hosts)
        for var, value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                           ("NVSHMEM_DISABLE_NVLS", "1")):
            os.environ.setdefault(var, value)
    tree = any(kv.startswith("DOMINO_TREE_") for kv in args.domino_env)

    def spec(algorithm: str) -> list[str]:
        if tree:  # tree mode: the plugin sets num-draft-tokens to the node budget N; B: block
            return spec_flags(algorithm, info["draft"], None) + [
                "--speculative-dflash-block-size", str(args.block_size)]
        if args.tree_topk > 1 and algorithm == "domino":  # tree mode on SGLang's own flags
            return [*spec_flags(algorithm, info["draft"], None),
                    "--speculative-dflash-block-size", str(args.block_size),
                    *tree_flags(args.block_size, args.tree_topk, args.tree_budget),
                    "--grammar-backend", "none"]
        return spec_flags(algorithm, info["draft"], args.block_size)

    flags = {"plain": common, "domino": common + spec("domino")}
    if not args.no_dflash_control:
        flags["dflash"] = common + spec("DFLASH")
    domino_env = dict(os.environ, **dict(kv.split("=", 1) for kv in args.domino_env))
    servers = {name: Server(name, args.base_port + i, sglang_command(args.base_port + i, f),
                            out_dir / f"e2e_server_{name}.log",
                            env=domino_env if name == "domino" else None)
               for i, (name, f) in enumerate(flags.items())}
    ok = False
    try:
        ready = start_all(servers, args.startup_timeout)
        res["ready"] = ready
        res["ready_s"] = {n: s.ready_s for n, s in servers.items()}
        if not all(ready.values()):
            print("server(s) failed to start:", ready, file=sys.stderr)
        else:
            run_checks(servers, info, args, res)
            res["checks"] = verdict(res, args)
            ok = all(res["checks"].values())
    except (Exception, KeyboardInterrupt) as exc:  # SIGTERM included: keep what was measured
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for s in servers.values():
            s.stop()
    return ok


if __name__ == "__main__":
    sys.exit(main())
