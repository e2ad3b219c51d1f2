"""Cost projection at Qwen3-8B shape: measured AR step and Domino round times -> speedup(tau).

One call on the H200 (about 5-8 min; two 8B-shaped servers start in parallel)::

    python3 benchmarks/cost_projection.py --out-dir $OUT/cost

No checkpoint is needed: the script writes a Qwen3-8B target ``config.json`` (hidden 4096,
36 layers, 32 heads / 8 KV heads, head_dim 128, MLP 12288, vocab 151936, bf16) and a Domino
drafter ``config.json`` at the public shape (5 layers, block 16, target_layer_ids
[1, 9, 17, 25, 33], mask 151669, projector_type domino, GRU 1024, rank 256, shift_label,
pure_draft_prefix_len 1) into ``--workdir``, and starts two SGLang servers with
``--load-format dummy`` (random weights from config.json; the draft follows the target's load
format) and ``--skip-tokenizer-init``: plain AR and ``--speculative-algorithm domino``
(``--with-dflash`` adds a stock DFLASH server on a plain-DFlash copy of the drafter config).

With dummy weights ``DominoDraftModel.load_weights`` is never called (SGLang's DummyModelLoader
fills every tensor of ``state_dict()`` with U(-1e-3, 1e-3), the head parameters included), so the
plugin's head-weight check does not run and the head runs with random weights: no plugin change
is needed. The acceptance of random drafts is whatever it is; the round time is measured per
verify step, so it does not matter.

Measurement (per server, per batch B in ``--batches``, one server at a time): B concurrent
``/generate`` requests (``input_ids``: B distinct random prompts of ``--prompt-len`` tokens,
greedy, ``ignore_eos``) with ``--short-tokens`` and with ``--long-tokens`` new tokens; the step
time is the differential ``(wall_long - wall_short) / (steps_long - steps_short)`` (prefill and
HTTP overheads cancel), where steps = completion tokens (AR) or ``spec_verify_ct`` (Domino), the
slowest request of the batch. Min over ``--repeats``.

Projection: ``speedup(tau) = tau * AR_step(B) / round(B)`` for tau in ``--taus`` (4 5 6 7 7.17 8),
beside the AR weight-read floor (bf16 target weights / bandwidth: nominal ``--bandwidth-tbs`` 4.3
TB/s, and a measured device-to-device copy bandwidth) and ``tau * floor / round(B)``.
Outputs: ``cost_projection.json`` + ``cost_projection.md`` (+ server logs) in ``--out-dir``,
also written with what was measured so far on SIGTERM (an outer ``timeout``) or when
``--budget-s`` (whole run, from the script's start) runs out: no new batch run starts after it.

``--start-gate PATH``: start the servers and wait for ``/health`` as usual, then wait (polling
every second) until PATH exists before measuring, so that scripts run in parallel on the same GPU
(``touch PATH`` when they are done) do not perturb the timings; the copy-bandwidth probe then
also runs after the gate. At most ``--gate-timeout-s`` (600): on timeout it measures anyway and
says so in the outputs (``meta.gate``: path, wait_s, timed_out).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from domino_sglang.bench.client import http_json
from domino_sglang.bench.harness import (Run, environment_fields, parse_recording_argv,
                                         provenance_lines)
from domino_sglang.bench.servers import (Server, server_flags, sglang_command, spec_flags,
                                         start_all, wait_for_gate)

ROOT = Path(__file__).resolve().parents[1]

QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 4096,
    "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "hidden_act": "silu",
    "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "rope_scaling": None, "attention_bias": False, "attention_dropout": 0.0,
    "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
    "sliding_window": None, "max_window_layers": 36, "initializer_range": 0.02,
}

DOMINO_DFLASH_CONFIG = {"block_size": 16, "target_layer_ids": [1, 9, 17, 25, 33],
                        "mask_token_id": 151669, "projector_type": "domino",
                        "gru_hidden_dim": 1024, "emb_dim": 256, "shift_label": True,
                        "pure_draft_prefix_len": 1}

TAUS = [4.0, 5.0, 6.0, 7.0, 7.17, 8.0]


def drafter_config(domino: bool = True) -> dict:
    t = QWEN3_8B
    section = dict(DOMINO_DFLASH_CONFIG)
    if not domino:  # plain DFlash: no head, public DFlash convention
        for k in ("projector_type", "gru_hidden_dim", "emb_dim", "pure_draft_prefix_len"):
            section.pop(k)
        section["shift_label"] = False
    return {"architectures": ["DFlashDraftModel"], "model_type": "qwen3",
            "hidden_size": t["hidden_size"], "intermediate_size": t["intermediate_size"],
            "num_hidden_layers": 5, "num_attention_heads": t["num_attention_heads"],
            "num_key_value_heads": t["num_key_value_heads"], "head_dim": t["head_dim"],
            "vocab_size": t["vocab_size"], "rms_norm_eps": t["rms_norm_eps"],
            "rope_theta": t["rope_theta"], "max_position_embeddings":
                t["max_position_embeddings"], "attention_bias": False, "hidden_act": "silu",
            "num_target_layers": t["num_hidden_layers"], "block_size": 16,
            "torch_dtype": "bfloat16", "tie_word_embeddings": False,
            "dflash_config": section}


def write_models(workdir: Path) -> dict:
    paths = {"target": workdir / "qwen3-8b-shape", "draft": workdir / "domino-b16-shape",
             "draft_dflash": workdir / "dflash-b16-shape"}
    for key, cfg in (("target", QWEN3_8B), ("draft", drafter_config(True)),
                     ("draft_dflash", drafter_config(False))):
        paths[key].mkdir(parents=True, exist_ok=True)
        (paths[key] / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (paths["target"] / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": QWEN3_8B["eos_token_id"], "bos_token_id": QWEN3_8B["bos_token_id"]}))
    return {k: str(v) for k, v in paths.items()}


def qwen3_param_count(cfg: dict) -> dict:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    layer = (h * nh * hd + 2 * h * nkv * hd + nh * hd * h  # q, k, v, o
             + 3 * h * i  # gate, up, down
             + 2 * h + 2 * hd)  # input/post norms, q_norm/k_norm
    embed = v * h
    lm_head = 0 if cfg.get("tie_word_embeddings") else v * h
    total = embed + lm_head + cfg["num_hidden_layers"] * layer + h
    return {"total": total, "embed": embed, "lm_head": lm_head,
            "read_per_decode_step": total - embed}  # the input embedding is a gather


def weight_floor_ms(n_params: int, bandwidth_tbs: float, bytes_per_param: int = 2) -> float:
    return n_params * bytes_per_param / (bandwidth_tbs * 1e12) * 1e3


# ---- server commands ------------------------------------------------------------------------
def server_args(args, models: dict, kind: str) -> list[str]:
    cmd = server_flags(models["target"], "bfloat16", args.mem_fraction, args.max_total_tokens, 0,
                       ["--load-format", "dummy", "--skip-tokenizer-init",
                        "--max-running-requests", str(max(args.batches) * 2),
                        "--context-length", "4096", *shlex.split(args.extra_server_args)],
                       cuda_graph_bs=args.cuda_graph_bs, decode_log_interval=None)
    if kind == "domino":
        cmd += spec_flags("domino", models["draft"], 16)
    elif kind == "dflash":
        cmd += spec_flags("DFLASH", models["draft_dflash"], 16)
    return cmd


def server_command(args, models: dict, kind: str, port: int) -> list[str]:
    return sglang_command(port, server_args(args, models, kind))


# ---- measurement ----------------------------------------------------------------------------
def run_batch(url: str, batch: int, new_tokens: int, prompt_len: int, vocab: int,
              seed: int) -> dict:
    rng = random.Random(seed)
    prompts = [[rng.randrange(10, vocab - 300) for _ in range(prompt_len)] for _ in range(batch)]

    def one(ids):
        out = http_json(url + "/generate", {"input_ids": ids, "sampling_params": {
            "max_new_tokens": new_tokens, "temperature": 0.0, "ignore_eos": True}}, timeout=300)
        meta = out.get("meta_info", {})
        return int(meta.get("completion_tokens") or 0), meta.get("spec_verify_ct")

    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(batch)
    try:
        outs = list(pool.map(one, prompts))
    finally:  # on SIGTERM do not wait for the requests in flight (the servers get stopped)
        pool.shutdown(wait=False, cancel_futures=True)
    wall = time.perf_counter() - t0
    tokens = [t for t, _ in outs]
    verify = [v for _, v in outs]
    spec = all(v is not None for v in verify) and any(v for v in verify)
    return {"wall_s": wall, "tokens": tokens, "verify_ct": verify if spec else None,
            "steps": max(verify) if spec else max(tokens)}


def step_time_ms(short: dict, long: dict) -> float | None:
    """Differential time per decode step (AR) or per verify round (speculative)."""
    d_steps = long["steps"] - short["steps"]
    if d_steps <= 0:
        return None
    return (long["wall_s"] - short["wall_s"]) / d_steps * 1e3


def measure_server(url: str, args, vocab: int, deadline: float = float("inf"),
                   res: dict | None = None) -> dict:
    """Per batch size: step time (min over repeats). Fills ``res`` in place (kept on SIGTERM);
    starts no batch run after ``deadline`` (a batch with at least one trial is kept)."""
    res = {} if res is None else res
    for b in args.batches:
        if time.time() >= deadline:
            break
        run_batch(url, b, args.short_tokens, args.prompt_len, vocab, seed=99 + b)  # warm-up
        trials = []
        for r in range(args.repeats):
            if time.time() >= deadline:
                break
            s = run_batch(url, b, args.short_tokens, args.prompt_len, vocab, seed=1000 * r + b)
            lg = run_batch(url, b, args.long_tokens, args.prompt_len, vocab, seed=1000 * r + b)
            trials.append({"short": s, "long": lg, "step_ms": step_time_ms(s, lg)})
        if not trials:
            break
        ok = [t["step_ms"] for t in trials if t["step_ms"] is not None]
        last = trials[-1]["long"]
        tau = (sum(last["tokens"]) / sum(last["verify_ct"])
               if last["verify_ct"] and sum(last["verify_ct"]) else None)
        res[str(b)] = {"step_ms": min(ok) if ok else None, "trials_step_ms": ok,
                       "tau_random": tau, "long_wall_s": last["wall_s"],
                       "long_steps": last["steps"]}
        print(f"  {url} batch {b}: {res[str(b)]['step_ms']} ms/step (tau {tau})", flush=True)
    return res


def measured_copy_bandwidth_tbs(gib: float = 4.0) -> float | None:
    """Device-to-device copy: (read + write) bytes / time; None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        n = int(gib * 2**30)
        x = torch.empty(n, dtype=torch.uint8, device="cuda")
        y = torch.empty_like(x)
        y.copy_(x)
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            y.copy_(x)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        del x, y
        torch.cuda.empty_cache()
        return 2 * n / best / 1e12
    except Exception:  # noqa: BLE001
        return None


# ---- projection (pure; tested on CPU with fake timings) -------------------------------------
def project(ar_ms: dict, round_ms: dict, taus: list[float], floor_ms: float) -> list[dict]:
    rows = []
    for b in sorted(set(ar_ms) & set(round_ms), key=int):
        a, r = ar_ms[b], round_ms[b]
        for tau in taus:
            rows.append({
                "batch": int(b), "tau": tau, "ar_step_ms": _r(a), "round_ms": _r(r),
                "speedup": None if not a or not r else round(tau * a / r, 3),
                "ar_floor_ms": _r(floor_ms),
                "speedup_vs_floor_ar": None if not r else round(tau * floor_ms / r, 3),
                "ar_tokens_per_s": None if not a else round(int(b) / a * 1e3, 1),
                "domino_tokens_per_s": None if not r else round(int(b) * tau / r * 1e3, 1),
                "break_even_tau": None if not a or not r else round(r / a, 3)})
    return rows


def _r(v, nd=3):
    return None if v is None else round(float(v), nd)


def markdown(meta: dict, rows: list[dict]) -> str:
    p = meta["params"]
    out = [f"# Cost projection at Qwen3-8B shape: {meta['date']}", "",
           *provenance_lines(meta), f"- device: {meta.get('device')}",
           "- servers: `--load-format dummy --skip-tokenizer-init --dtype bfloat16 "
           "--attention-backend triton`, greedy, ignore_eos, prompt "
           f"{meta['prompt_len']} tokens, step = differential over {meta['short_tokens']} vs "
           f"{meta['long_tokens']} new tokens; start-up s: {json.dumps(meta.get('ready_s'))}",
           f"- start gate: {_gate_text(meta.get('gate'))}; budget: "
           + (f"{meta['budget_s']:g} s (stopped early: {json.dumps(meta.get('budget_stopped'))})"
              if meta.get("budget_s") else "none"),
           f"- target params {p['total'] / 1e9:.3f} B ({p['total'] * 2 / 1e9:.2f} GB bf16; "
           f"{p['read_per_decode_step'] * 2 / 1e9:.2f} GB without the input embedding). "
           f"AR weight-read floor: {meta['floor_ms']:.2f} ms at {meta['bandwidth_tbs']} TB/s "
           f"nominal; measured D2D copy bandwidth {_fmt(meta.get('measured_bandwidth_tbs'))} "
           f"TB/s -> floor {_fmt(meta.get('floor_ms_measured_bw'))} ms",
           "", "Measured step times (ms):", "",
           "| batch | AR ms/token-step | Domino ms/round | tau (random drafter) | "
           + ("DFLASH ms/round | " if meta.get("dflash") else "") + "break-even tau |",
           "| ---: | ---: | ---: | ---: | " + ("---: | " if meta.get("dflash") else "")
           + "---: |"]
    for b in meta["batches"]:
        a = meta["ar"].get(str(b), {}).get("step_ms")
        d = meta["domino"].get(str(b), {})
        line = (f"| {b} | {_fmt(a)} | {_fmt(d.get('step_ms'))} | "
                f"{_fmt(d.get('tau_random'))} | ")
        if meta.get("dflash"):
            line += f"{_fmt(meta['dflash'].get(str(b), {}).get('step_ms'))} | "
        be = d.get("step_ms") / a if a and d.get("step_ms") else None
        out.append(line + f"{_fmt(be)} |")
    out += ["", "Projected speedup = tau x AR step / Domino round (and vs an AR at the "
            "weight-read floor):", "",
            "| batch | tau | speedup | vs floor AR | Domino tok/s | AR tok/s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['batch']} | {r['tau']:g} | {_fmt(r['speedup'], 'x')} | "
                   f"{_fmt(r['speedup_vs_floor_ar'], 'x')} | "
                   f"{_fmt(r['domino_tokens_per_s'], '', '.0f')} | "
                   f"{_fmt(r['ar_tokens_per_s'], '', '.0f')} |")
    if meta.get("errors"):
        out += ["", "Errors:", ""] + [f"- `{k}`: {v}" for k, v in meta["errors"].items()]
    return "\n".join(out) + "\n"


def _gate_text(gate: dict | None) -> str:
    if not gate:
        return "none"
    return (f"`{gate['path']}`, waited {gate['wait_s']} s"
            + (" (TIMED OUT: measured anyway)" if gate.get("timed_out") else ""))


def _fmt(v, suffix="", spec=".2f"):
    return "-" if v is None else f"{v:{spec}}{suffix}"


# ---- main -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--workdir", type=Path, default=Path("/tmp/domino_cost"))
    a("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "cost")
    a("--batches", type=int, nargs="+", default=[1, 16, 64])
    a("--taus", type=float, nargs="+", default=TAUS)
    a("--prompt-len", type=int, default=64)
    a("--short-tokens", type=int, default=32)
    a("--long-tokens", type=int, default=288)
    a("--repeats", type=int, default=2)
    a("--bandwidth-tbs", type=float, default=4.3, help="nominal HBM bandwidth for the floor")
    a("--cuda-graph-bs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    a("--mem-fraction", type=float, default=0.45)
    a("--max-total-tokens", type=int, default=65536)
    a("--with-dflash", action="store_true", help="also a stock DFLASH server (plain drafter)")
    a("--base-port", type=int, default=31200)
    a("--startup-timeout", type=float, default=360.0)
    a("--extra-server-args", default="")
    a("--start-gate", type=Path, default=None,
      help="after the servers are healthy, wait until this file exists before measuring")
    a("--gate-timeout-s", type=float, default=600.0,
      help="longest wait for --start-gate; then measure anyway (recorded)")
    a("--budget-s", type=float, default=None,
      help="whole-run budget from the script's start: no batch run starts after it; what was "
           "measured is written")
    a("--commit", default=None, help="the commit that ran (else $DOMINO_COMMIT, else git)")
    a("--dry-run", action="store_true", help="write the configs, print the commands; exit")
    return p


def main(argv=None) -> int:
    args = parse_recording_argv(build_parser(), argv, __file__)
    t_start = time.time()
    models = write_models(Path(args.workdir))
    kinds = ["ar", "domino"] + (["dflash"] if args.with_dflash else [])
    cmds = {k: server_command(args, models, k, args.base_port + i) for i, k in enumerate(kinds)}
    if args.dry_run:
        print(json.dumps({"models": models, "servers": {k: shlex.join(c)
                                                          for k, c in cmds.items()},
                          "start_gate": args.start_gate and str(args.start_gate),
                          "gate_timeout_s": args.gate_timeout_s, "budget_s": args.budget_s},
                         indent=1))
        return 0
    deadline = t_start + args.budget_s if args.budget_s else float("inf")
    # SIGTERM (an outer `timeout`) -> Terminated, caught below: what was measured is written
    with Run(Path(args.out_dir), "cost_projection", args.argv, args.commit,
             render=lambda d: markdown(d["meta"], d["projection"]),
             stem="cost_projection") as run:
        run.data["projection"] = []
        meta = run.data["meta"]
        params = qwen3_param_count(QWEN3_8B)
        meta.update({**environment_fields(meta),
                     "models": models, "servers": {k: shlex.join(c) for k, c in cmds.items()},
                     "batches": args.batches, "prompt_len": args.prompt_len,
                     "short_tokens": args.short_tokens, "long_tokens": args.long_tokens,
                     "params": params, "bandwidth_tbs": args.bandwidth_tbs,
                     "floor_ms": weight_floor_ms(params["total"], args.bandwidth_tbs),
                     "ar": {}, "domino": {}, **({"dflash": {}} if args.with_dflash else {}),
                     "errors": {}, "gate": None, "budget_s": args.budget_s,
                     "budget_stopped": None,
                     "measured_bandwidth_tbs": None, "floor_ms_measured_bw": None})
        _measure(args, kinds, cmds, meta, run.out_dir, t_start, deadline)
        ar_ms = {b: v["step_ms"] for b, v in meta["ar"].items() if v.get("step_ms")}
        rd_ms = {b: v["step_ms"] for b, v in meta["domino"].items() if v.get("step_ms")}
        run.data["projection"] = project(ar_ms, rd_ms, args.taus, meta["floor_ms"])
    print(run.paths[1].read_text())
    return 0 if run.data["projection"] else 1


def _measure(args, kinds: list[str], cmds: dict, meta: dict, out_dir: Path, t_start: float,
             deadline: float) -> None:
    """Start the servers, then measure them one at a time into ``meta[kind]``; errors (SIGTERM
    included) go to ``meta["errors"]``."""
    params = meta["params"]

    def copy_bandwidth():
        bw = measured_copy_bandwidth_tbs()
        meta["measured_bandwidth_tbs"] = bw
        meta["floor_ms_measured_bw"] = weight_floor_ms(params["total"], bw) if bw else None

    if not args.start_gate:
        copy_bandwidth()
    servers = {k: Server(k, args.base_port + i, cmds[k], out_dir / f"server_{k}.log")
               for i, k in enumerate(kinds)}
    try:
        ready = start_all(servers, args.startup_timeout)
        meta["ready_s"] = {k: s.ready_s for k, s in servers.items()}
        print("ready:", json.dumps(meta["ready_s"]), flush=True)
        if args.start_gate:
            meta["gate"] = wait_for_gate(args.start_gate, args.gate_timeout_s)
            if meta["gate"]["timed_out"]:
                meta["errors"]["gate"] = (f"{args.start_gate} did not appear within "
                                          f"{args.gate_timeout_s:g} s: measured anyway")
            copy_bandwidth()
        for k in kinds:
            if not ready[k]:
                meta["errors"][f"{k}_startup"] = servers[k].log_tail(15)[-1500:]
                continue
            try:
                measure_server(servers[k].url, args, QWEN3_8B["vocab_size"], deadline,
                               res=meta[k])
            except Exception as exc:  # noqa: BLE001 - keep the other server's numbers
                meta["errors"][f"{k}_measure"] = f"{type(exc).__name__}: {exc}"
            servers[k].stop()
            missing = {k2: [b for b in args.batches if str(b) not in meta[k2]] for k2 in kinds}
            if time.time() >= deadline and any(missing.values()):
                meta["budget_stopped"] = {"missing_batches": missing,
                                          "at_s": round(time.time() - t_start, 1)}
                print(f"budget of {args.budget_s:g} s used up: stopped", flush=True)
                break
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        meta["errors"]["run"] = f"{type(exc).__name__}: {exc}"
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
