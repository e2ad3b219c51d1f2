"""A drafter recipe study: several domino-train runs against one frozen target, side by side,
then their acceptance length tau on held-out prompts, in one table.

Stages (--stages, comma-separated, run in this order):

  regen    the target answers the training prompts (--prompts; half greedy, half at
           temperature 1), into OUT/regen (GPU: 64 s for 32768 prompts on an H100); with
           --multiturn-prompts also those (prompts with their conversation context, written by
           the recipe's prepare stage) into OUT/regen_mt, for the variant multiturn
  train    one `domino-train --config OUT/<variant>/domino_train.json` per variant, all in
           parallel (--jobs) with the same time budget (--time-limit-s): the schedules follow
           the budget, so every variant anneals fully; steps reached are recorded
  eval     tau at T=0 and T=1 through the Transformers backend (the end-to-end reference) on
           --num-prompts held-out prompts, per variant and per --reference drafter, --jobs
           processes of one thread each; one file per (drafter, temperature), so it resumes.
           On a GPU keep --jobs 1: processes time-slice one GPU, and twelve of them on an
           H100 finished no tiny-pair job in 220 s that a 2-core CPU does in ~70 s
  final    the best recipe from the measured tau (per group of alternatives the variant that
           beats `base` by --pick-margin at the mean over every tau measured, Transformers
           backend and SGLang where the sglang stage ran, T=0 and T=1, and loses no more than
           that in any one; ablations never adopted), or the changes --final-adopt names
           (choices made over several studies), written to OUT/final_recipe.json, then three
           drafters with it: final-domino, final-dflash (head off), final-nocurriculum, for
           --final-time-limit-s each, in parallel
  sglang   tau at T=0 and T=1 on SGLang servers (one per drafter, started together and
           measured together; the whole block verified every round): needs a GPU and SGLang
  report   OUT/study.json + OUT/study.md (or --results-dir): every variant's change, steps,
           training seconds, last training metrics, tau per backend and temperature, size;
           the final drafters and the recipe they used where the final stage ran

The eval, sglang and report stages cover the final drafters once they exist.

Variants (--variants, default: the first study set) change one thing against `base`, the
recipe's drafter settings (python -m domino_sglang.train.recipe --print-config):
{variants}

Examples:

  # GPU: regenerate, then train the default set for 420 s each
  python -m domino_sglang.train.study --target assets/domino-tiny/target \\
      --prompts .data/regen_prompts.jsonl --out runs/study --stages regen,train
  # GPU: the second set (gamma, head size, layers, batch, lr schedule, data temperatures and
  # turns), multi-turn prompts regenerated beside the single-turn ones
  python -m domino_sglang.train.study --prompts .data/regen_prompts.jsonl \\
      --multiturn-prompts .data/regen_prompts_multiturn.jsonl --out runs/study2 \\
      --stages regen,train \\
      --variants base,gamma10,gamma4,gru256,layers2,batch64,lrconst,dataT0,multiturn
  # any machine: tau of every variant and of the shipped drafters, then the table
  python -m domino_sglang.train.study --target assets/domino-tiny/target --out runs/study \\
      --stages eval,report --reference shipped-domino=assets/domino-tiny/drafter-domino
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STAGES = ("regen", "train", "eval", "final", "sglang", "report")
PROG = "python -m domino_sglang.train.study"
ROOT = Path(__file__).resolve().parents[2]

# name -> (what changes, overrides of {"drafter", "loss", "optim"} and "time_frac" (a fraction
# of --time-limit-s), data: "half" | "all" | "t0" | "mt")
# "half": the first half of the regenerated shards (the recipe's 16384 prompts when --prompts
# holds 32768), "all": every shard (twice the data), "t0": the greedy answers of every shard
# (as many sequences as "half", all at T=0; built by greedy_view), "mt": every multi-turn
# answer (OUT/regen_mt) and base's first single-turn ones up to base's count (multiturn_view);
# "all+mt" (final drafters only, when "all" and "mt" are both adopted): every single-turn shard
# and every multi-turn answer (allmt_view)
VARIANTS: dict[str, tuple[str, dict, str]] = {
    "base": ("the recipe's settings (Domino head, curriculum over the first half)", {}, "half"),
    "dflash": ("no Domino head (plain DFlash, same backbone)", {"drafter": {"head": False}},
               "half"),
    "nocurriculum": ("no curriculum (CE_final only)", {"loss": {"curriculum": False}}, "half"),
    "lr6e-4": ("peak learning rate 6e-4 (SpecForge's)", {"optim": {"lr": 6e-4}}, "half"),
    "lr2e-3": ("peak learning rate 2e-3", {"optim": {"lr": 2e-3}}, "half"),
    "anchors48": ("48 anchors per sequence (recipe: 24)", {"loss": {"anchors_per_seq": 48}},
                  "half"),
    "curriculum1.0": ("curriculum over the whole run (SpecForge's span)",
                      {"loss": {"curriculum_frac": 1.0}}, "half"),
    "data2x": ("twice the regenerated data (all --prompts)", {}, "all"),
    "base-third": ("a third of the training time (training length)", {"time_frac": 1 / 3},
                   "half"),
    "gamma10": ("position decay gamma 10 (recipe: 7)", {"loss": {"gamma": 10.0}}, "half"),
    "gamma4": ("position decay gamma 4", {"loss": {"gamma": 4.0}}, "half"),
    "gru256": ("GRU 256, rank 128 (recipe: 128, 64; a larger head)",
               {"drafter": {"gru_hidden_dim": 256, "rank": 128}}, "half"),
    "layers2": ("two drafter layers (recipe: 1)", {"drafter": {"num_hidden_layers": 2}},
                "half"),
    "batch64": ("64 sequences per step (recipe: 32): more data per second where the steps "
                "are launch-bound", {"optim": {"batch_size": 64}}, "half"),
    "lrconst": ("constant learning rate after the warm-up (recipe: cosine down to a tenth)",
                {"optim": {"min_lr_ratio": 1.0}}, "half"),
    "dataT0": ("greedy (T=0) answers only, as many sequences as base (recipe: half greedy, "
               "half sampled at T=1)", {}, "t0"),
    "multiturn": ("answers to prompts with their conversation context (--multiturn-prompts) "
                  "in place of as many of base's single-turn ones", {}, "mt"),
}
# data: which regenerated shards a variant trains on (directories under --out)
DATA_DIRS = {"half": "regen_half", "all": "regen", "t0": "regen_t0", "mt": "regen_mtmix",
             "all+mt": "regen_allmt"}
# alternatives the final stage chooses among (one per group); the other variants are
# ablations or a training length check and are never adopted
GROUPS = {"lr6e-4": "lr", "lr2e-3": "lr", "anchors48": "anchors",
          "curriculum1.0": "curriculum span", "data2x": "data", "gamma10": "gamma",
          "gamma4": "gamma", "gru256": "head size", "layers2": "layers", "batch64": "batch",
          "lrconst": "lr schedule", "dataT0": "data temperatures", "multiturn": "data turns"}
# the final drafters: the picked recipe, then these overrides
FINALS = {"final-domino": ("the picked recipe", {}),
          "final-dflash": ("the picked recipe, no Domino head", {"drafter": {"head": False}}),
          "final-nocurriculum": ("the picked recipe, no curriculum",
                                 {"loss": {"curriculum": False}})}
DEFAULT_SET = ("base", "dflash", "nocurriculum", "lr6e-4", "lr2e-3", "anchors48",
               "curriculum1.0", "data2x", "base-third")
__doc__ = __doc__.format(variants="\n".join(f"  {k:14s} {v[0]}" for k, v in VARIANTS.items()))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def variant_config(name: str, target: Path, out: Path, time_limit_s: float | None,
                   smoke: bool = False, seed: int = 0, recipe: dict | None = None) -> dict:
    """The domino-train settings (a TrainConfig as JSON) of one variant, or of a final drafter
    (``name`` in FINALS) with ``recipe`` (from :func:`pick_recipe`)."""
    from .config import TrainConfig
    from .recipe import PRESETS

    rc = PRESETS["smoke" if smoke else "gpu"]
    if name in FINALS:
        if recipe is None:
            raise ValueError(f"{name} needs the picked recipe")
        over, data = _merge(recipe["overrides"], FINALS[name][1]), recipe["data"]
    else:
        _, over, data = VARIANTS[name]
    over = dict(over)
    frac = over.pop("time_frac", None)
    if frac is not None and time_limit_s is not None:
        time_limit_s = time_limit_s * frac
    base = {"target": str(target), "data": str(out / DATA_DIRS[data]),
            "out_dir": str(out / name), "drafter": rc.drafter.model_dump(),
            "loss": rc.loss.model_dump(), "optim": rc.drafter_optim.model_dump(),
            "seed": seed, "time_limit_s": time_limit_s, "quiet": True, "log_every": 20,
            "save_every": 100_000}
    cfg = _merge(base, over)
    return json.loads(TrainConfig.model_validate(cfg).model_dump_json())


# ---- stages ---------------------------------------------------------------------------------
def stage_regen(target: Path, prompts_path: Path, out: Path, smoke: bool, seed: int,
                quiet: bool, time_limit_s: float | None = None,
                multiturn: Path | None = None) -> dict:
    from .recipe import PRESETS, regenerate
    from .trainer import resolve_device

    rc = PRESETS["smoke" if smoke else "gpu"].regen
    t0 = time.monotonic()
    n = regenerate(target, prompts_path, out / "regen", rc, seed, quiet, time_limit_s)
    half = out / "regen_half"
    half.mkdir(exist_ok=True)
    parts = sorted((out / "regen").glob("part-*.npz"))
    if not parts:
        raise RuntimeError(f"regen: no shard of {rc.batch_size * len(rc.temperatures)} prompts "
                           f"finished within {time_limit_s} s; raise --regen-time-limit-s")
    for p in parts[: max(1, len(parts) // 2)]:
        link = half / p.name
        if not link.exists():
            link.symlink_to(Path("..") / "regen" / p.name)
    info = {"prompts": n, "shards": len(parts), "half_shards": max(1, len(parts) // 2),
            "wall_s": round(time.monotonic() - t0, 1), "device": str(resolve_device("auto"))}
    if multiturn is not None:
        t1 = time.monotonic()
        info["multiturn_prompts"] = regenerate(target, multiturn, out / "regen_mt", rc, seed + 1,
                                               quiet, time_limit_s)
        info["multiturn_wall_s"] = round(time.monotonic() - t1, 1)
    return info


def greedy_view(out: Path) -> Path:
    """OUT/regen_t0: every shard of OUT/regen cut to its greedy rows (prompt ``j`` was answered
    at ``temperatures[j % n]``, read from OUT/regen/meta.json; shards start at multiples of the
    shard size). Built once; returns the directory."""
    from .data import TokenDataset, write_meta

    src, dst = out / "regen", out / DATA_DIRS["t0"]
    meta_path = src / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: the regen stage's meta (temperatures) is missing; "
                                "run the regen stage first")
    cfg = json.loads(meta_path.read_text())["config"]
    temps = [float(t) for t in cfg["temperatures"]]
    if 0.0 not in temps:
        raise ValueError(f"{meta_path}: no greedy answers (temperatures {temps})")
    n, greedy = len(temps), temps.index(0.0)
    shard = int(cfg["batch_size"]) * n
    parts = sorted(src.glob("part-*.npz"))
    if not parts:
        raise FileNotFoundError(f"{src}: no part-*.npz shards")
    dst.mkdir(parents=True, exist_ok=True)
    for p in parts:
        if (dst / p.name).exists():
            continue
        lo = int(p.stem.split("-")[1]) * shard
        ds = TokenDataset.load_part(p)
        pairs = [ds.get(r) for r in range(len(ds)) if (lo + r) % n == greedy]
        TokenDataset.from_sequences([t for t, _ in pairs], [m for _, m in pairs]) \
            .save_part(dst / p.name)
    write_meta(dst, kind="regen-greedy", source=str(src), shards=len(parts), temperature=0.0)
    return dst


def multiturn_view(out: Path) -> Path:
    """OUT/regen_mtmix: every answer of OUT/regen_mt (prompts with their conversation context)
    followed by OUT/regen_half's first sequences, as many sequences in all as regen_half has
    (one shard). Built once; returns the directory."""
    from .data import TokenDataset, load_dataset, write_meta

    dst = out / DATA_DIRS["mt"]
    part = dst / "part-00000.npz"
    if not part.exists():
        if not (out / "regen_mt").exists():
            raise FileNotFoundError(f"{out / 'regen_mt'}: no multi-turn answers; run the regen "
                                    "stage with --multiturn-prompts")
        mt, half = load_dataset(out / "regen_mt"), load_dataset(out / "regen_half")
        keep = max(0, len(half) - len(mt))
        rows = [mt.get(i) for i in range(min(len(mt), len(half)))] + \
            [half.get(i) for i in range(keep)]
        dst.mkdir(parents=True, exist_ok=True)
        TokenDataset.from_sequences([t for t, _ in rows], [m for _, m in rows]).save_part(part)
        write_meta(dst, kind="regen-multiturn-mix", multiturn=min(len(mt), len(half)),
                   single_turn=keep)
    return dst


def allmt_view(out: Path) -> Path:
    """OUT/regen_allmt: every shard of OUT/regen and every shard of OUT/regen_mt (links, no
    copy; the multi-turn shards named ``part-mt-*`` so that they load after the single-turn
    ones). Built once; returns the directory."""
    from .data import write_meta

    dst = out / DATA_DIRS["all+mt"]
    single = sorted((out / "regen").glob("part-*.npz"))
    multi = sorted((out / "regen_mt").glob("part-*.npz"))
    if not single or not multi:
        missing = out / ("regen" if not single else "regen_mt")
        raise FileNotFoundError(f"{missing}: no shards; run the regen stage"
                                + ("" if single else " with --multiturn-prompts"))
    dst.mkdir(parents=True, exist_ok=True)
    for src, name in [(p, p.name) for p in single] + \
            [(p, p.name.replace("part-", "part-mt-", 1)) for p in multi]:
        link = dst / name
        if not link.exists():
            link.symlink_to(Path("..") / src.parent.name / src.name)
    write_meta(dst, kind="regen-all-and-multiturn", single_turn_shards=len(single),
               multiturn_shards=len(multi))
    return dst


def _data_view(out: Path, data: str) -> None:
    """Build the derived data directory a variant or final drafter trains on, if any."""
    if data == "t0":
        greedy_view(out)
    elif data == "mt":
        multiturn_view(out)
    elif data == "all+mt":
        allmt_view(out)


def stage_train(names: list[str], target: Path, out: Path, time_limit_s: float | None,
                jobs: int, smoke: bool, seed: int) -> dict:
    """Every variant as a domino-train subprocess, ``jobs`` at a time; a status line every 30 s."""
    from .config import TrainConfig
    from .recipe import train_drafters

    for data in sorted({VARIANTS[n][2] for n in names}):
        _data_view(out, data)

    cfgs = {n: TrainConfig.model_validate(variant_config(n, target, out, time_limit_s, smoke,
                                                         seed)) for n in names}
    t0 = time.monotonic()

    def status(running: list[str], done: list[str]) -> None:
        steps = {n: _last_metrics(out / n).get("step") for n in running}
        print(f"[study] {time.monotonic() - t0:.0f} s: running {steps}, done {done}", flush=True)

    train_drafters(cfgs, jobs, status)
    return {"wall_s": round(time.monotonic() - t0, 1), "jobs": jobs,
            "time_limit_s": time_limit_s}


def _taus(out: Path, name: str, temps: list[float]) -> dict[str, float]:
    """Every tau measured for ``name``: {"HF T=0": .., "SGLang T=0": .., ...}."""
    cells = {}
    for backend, label in (("eval", "HF"), ("sglang", "SGLang")):
        for t in temps:
            f = out / backend / f"{name}_T{t:g}.json"
            tau = json.loads(f.read_text()).get("tau") if f.exists() else None
            if tau:
                cells[f"{label} T={t:g}"] = tau
    return cells


def pick_recipe(names: list[str], out: Path, temps: list[float], margin: float) -> dict:
    """The best recipe from the measured tau: per group of alternatives (GROUPS), the variant
    whose tau over `base`'s, averaged over every measurement both have (the eval stage's
    Transformers-backend tau at each of ``temps``, and the sglang stage's where it ran), is
    highest and at least 1 + ``margin``, and in no measurement below 1 - ``margin``. The
    adopted variants' changes are merged (they touch different settings); every candidate's
    ratios and verdict are kept."""
    base = _taus(out, "base", temps)
    missing = [f"base T={t:g}" for t in temps if f"HF T={t:g}" not in base]
    if missing:
        raise RuntimeError(f"final: no eval result for {missing[0]} in {out / 'eval'}; run the "
                           "train and eval stages with the variant base first")
    cands, best = {}, {}
    for n in names:
        if n not in GROUPS:
            continue
        taus = _taus(out, n, temps)
        if any(f"HF T={t:g}" not in taus for t in temps):
            cands[n] = {"group": GROUPS[n], "verdict": "not evaluated"}
            continue
        ratios = {k: v / base[k] for k, v in taus.items() if k in base}
        mean = sum(ratios.values()) / len(ratios)
        ok = mean >= 1 + margin and min(ratios.values()) >= 1 - margin
        cands[n] = {"group": GROUPS[n], "tau_ratio_vs_base": ratios, "mean_ratio": mean,
                    "verdict": "better than base" if ok else "not better than base"}
        if ok and (GROUPS[n] not in best or mean > cands[best[GROUPS[n]]]["mean_ratio"]):
            best[GROUPS[n]] = n
    adopted = sorted(best.values(), key=names.index)
    for n in adopted:
        cands[n]["verdict"] = "adopted"
    return {**recipe_of(adopted), "margin": margin, "base_tau": base, "candidates": cands}


def recipe_of(adopted: list[str]) -> dict:
    """The final recipe that adopts the changes of ``adopted`` (variant names; at most one per
    group): their overrides merged, and their data (``all`` and ``mt`` together give ``all+mt``:
    every single-turn answer and every multi-turn one)."""
    groups: dict[str, str] = {}
    for n in adopted:
        if n not in GROUPS:
            raise ValueError(f"{n}: not an alternative the final recipe can adopt (choose from "
                             f"{', '.join(GROUPS)})")
        if GROUPS[n] in groups:
            raise ValueError(f"{groups[GROUPS[n]]} and {n} are alternatives of one group "
                             f"({GROUPS[n]}): adopt one")
        groups[GROUPS[n]] = n
    overrides, datas = {}, set()
    for n in adopted:
        over = {k: v for k, v in VARIANTS[n][1].items() if k != "time_frac"}
        overrides = _merge(overrides, over)
        if VARIANTS[n][2] != "half":
            datas.add(VARIANTS[n][2])
    if datas == {"all", "mt"}:
        data = "all+mt"
    elif len(datas) > 1:
        raise ValueError(f"{', '.join(n for n in adopted if VARIANTS[n][2] != 'half')}: their "
                         f"data ({', '.join(sorted(datas))}) cannot be combined; adopt one")
    else:
        data = datas.pop() if datas else "half"
    desc = "the recipe's settings" if not adopted else "; ".join(VARIANTS[n][0] for n in adopted)
    if data == "all+mt":
        desc += " (together: every single-turn answer and every multi-turn one)"
    return {"adopted": list(adopted), "overrides": overrides, "data": data, "description": desc}


def stage_final(names: list[str], target: Path, out: Path, temps: list[float],
                time_limit_s: float | None, jobs: int, smoke: bool, seed: int,
                margin: float, adopt: list[str] | None = None) -> dict:
    """Pick the recipe (OUT/final_recipe.json), then train the three final drafters.
    ``adopt``: the changes to adopt, given (``--final-adopt``, e.g. from studies run apart)
    instead of picked from this folder's tau."""
    from .config import TrainConfig
    from .recipe import train_drafters

    if adopt is not None:
        recipe = {**recipe_of(adopt), "given": "--final-adopt " + ",".join(adopt)}
    else:
        recipe = pick_recipe(names, out, temps, margin)
    _data_view(out, recipe["data"])
    (out / "final_recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(f"[study] final recipe: {recipe['description']} (adopted: {recipe['adopted']})",
          flush=True)
    cfgs = {n: TrainConfig.model_validate(variant_config(n, target, out, time_limit_s, smoke,
                                                         seed, recipe)) for n in FINALS}
    t0 = time.monotonic()
    train_drafters(cfgs, jobs or len(cfgs))
    return {"wall_s": round(time.monotonic() - t0, 1), "time_limit_s": time_limit_s,
            "recipe": recipe["description"]}


def _last_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(rows[-1]) if rows else {}


def finals_of(out: Path) -> list[str]:
    """The final drafters that exist under ``out`` (the final stage ran)."""
    return [n for n in FINALS if (out / n / "drafter" / "config.json").exists()]


def drafters_of(names: list[str], out: Path, refs: dict[str, Path]) -> dict[str, Path]:
    """Every trained variant of ``names``, every final drafter, then the references."""
    found = {n: out / n / "drafter" for n in [*names, *finals_of(out)]
             if (out / n / "drafter" / "config.json").exists()}
    return {**found, **refs}


def _eval_one(args: tuple) -> str:
    """One (drafter, temperature) tau job in its own process (one thread)."""
    (target, name, path, temp, prompts_path, num_prompts, max_new, seed, out_file, device,
     dtype_name, stamp) = args
    import torch

    torch.set_num_threads(1)
    dtype = getattr(torch, dtype_name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.drafter import DominoDrafter
    from .evaluate import evaluate_tau, load_prompts

    dev = torch.device(device)
    tgt = AutoModelForCausalLM.from_pretrained(str(target), dtype=dtype).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(str(target))
    drafter = DominoDrafter.from_pretrained(path, dtype=dtype, device=dev).eval()
    prompts = load_prompts(prompts_path, num_prompts)
    t0 = time.perf_counter()
    res = evaluate_tau(tgt, {name: drafter}, prompts, temperatures=[temp],
                       max_new_tokens=max_new, stop_token_ids=[tok.eos_token_id], seed=seed,
                       quiet=True)[name][f"T={temp:g}"]
    res.update(drafter=str(path), device=str(dev), dtype=dtype_name,
               eval_wall_s=time.perf_counter() - t0, max_new_tokens=max_new, **stamp)
    Path(out_file).write_text(json.dumps(res, indent=2) + "\n")
    return f"{name} T={temp:g}: tau {res['tau']:.3f} ({res['eval_wall_s']:.0f} s)"


def stage_eval(drafters: dict[str, Path], target: Path, prompts_path: Path, out: Path,
               num_prompts: int, max_new: int, temps: list[float], jobs: int, seed: int,
               device: str, dtype: str = "float32", stamp: dict | None = None) -> None:
    """tau per (drafter, temperature) into OUT/eval/<name>_T<t>.json, each stamped with
    ``stamp`` (commit, versions, command, date)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    (out / "eval").mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda") and jobs > 1:
        logger.warning("eval: %d processes share one GPU by time-slicing, which is slow for "
                       "small models; --jobs 1 (or --device cpu for a tiny target) is faster",
                       jobs)
    todo = []
    for name, path in drafters.items():
        for temp in temps:
            f = out / "eval" / f"{name}_T{temp:g}.json"
            if f.exists():
                continue
            todo.append((str(target), name, str(path), temp, str(prompts_path), num_prompts,
                         max_new, seed, str(f), device, dtype, stamp or {}))
    logger.info("eval: %d jobs (%d already done)", len(todo),
                len(drafters) * len(temps) - len(todo))
    # the longest jobs (T>0 takes about 4x the rounds' time of T=0 on a CPU) first
    todo.sort(key=lambda a: -a[3])
    with ProcessPoolExecutor(max(1, jobs), mp_context=mp.get_context("spawn")) as pool:
        for line in pool.map(_eval_one, todo):
            print(f"[study] {line}", flush=True)


def stage_sglang(drafters: dict[str, Path], target: Path, prompts_path: Path, out: Path,
                 num_prompts: int, max_new: int, temps: list[float], concurrency: int,
                 seed: int, dtype: str, launcher: str | None = None,
                 server_env: dict[str, str] | None = None, base_port: int = 31000,
                 stamp: dict | None = None) -> None:
    """One SGLang server per drafter (whole block verified every round), started together;
    tau = completion tokens / verify rounds over the held-out prompts at each temperature."""
    import asyncio

    from ..bench.client import Client, closed_loop
    from ..bench.harness import gpu_info
    from ..bench.servers import Server, sglang_command, start_all
    from ..bench.systems import (Pair, ServerOpts, mem_fraction_for, server_memory,
                                 system_flags)
    from .evaluate import load_prompts

    (out / "sglang").mkdir(parents=True, exist_ok=True)
    todo = {n: p for n, p in drafters.items()
            if not all((out / "sglang" / f"{n}_T{t:g}.json").exists() for t in temps)}
    if not todo:
        return
    opts = ServerOpts(dtype=dtype, max_total_tokens=32768, max_running_requests=32,
                      cuda_graph_bs=(1, 2, 4, 8, 16, 32), seed=seed)
    pairs = {n: Pair(n, out, target, {"drafter-domino": p, "drafter-dflash": p},
                     _block_size(p), True) for n, p in todo.items()}
    gpu = gpu_info()
    gpu_gb = (gpu["gpus"][0]["memory_total_mib"] / 1024) if gpu.get("available") else 80.0
    need = sum(server_memory("domino_fixed", pr, opts)["total_gb"] for pr in pairs.values())
    frac = mem_fraction_for(need, gpu_gb)
    if frac is None:
        raise RuntimeError(f"{len(pairs)} servers need {need:.1f} GB: more than this GPU")
    servers = {}
    for i, (n, pr) in enumerate(pairs.items()):
        flags, env = system_flags("domino_fixed", pr, opts, frac)
        port = base_port + i
        cmd = ([*shlex.split(launcher), "--host", "127.0.0.1", "--port", str(port), *flags]
               if launcher else sglang_command(port, flags))
        servers[n] = Server(n, port, cmd,
                            out / "sglang" / f"server_{n}.log",
                            env={**os.environ, **env, **(server_env or {})})
    try:
        ready = start_all(servers, timeout=600)
        prompts = load_prompts(prompts_path, num_prompts)

        async def measure(srv: Server, temp: float) -> dict:
            reqs = [{"input_ids": p, "sampling_params": {
                "max_new_tokens": max_new, "temperature": temp, "top_k": -1, "top_p": 1.0}}
                for p in prompts]
            async with Client(srv.url) as c:
                run = await closed_loop(c, reqs, concurrency)
            ok = [r for r in run.results if r.ok]
            toks = sum(r.completion_tokens for r in ok)
            steps = sum(r.spec_verify_ct or 0 for r in ok)
            return {"tau": toks / steps if steps else None, "completion_tokens": toks,
                    "verify_rounds": steps, "ok": len(ok), "requests": len(reqs),
                    "errors": [r.error for r in run.results if not r.ok][:5],
                    "per_prompt_tokens_rounds": [[r.completion_tokens, r.spec_verify_ct]
                                                 if r.ok else None for r in run.results],
                    "wall_s": run.wall_s, "concurrency": concurrency, "port": srv.port,
                    "max_new_tokens": max_new, "startup_s": srv.ready_s}

        async def one_server(n: str, srv: Server) -> None:
            for t in temps:  # the temperatures one after the other, the servers together
                res = await measure(srv, t)
                res.update(stamp or {})  # provenance first: the server's own fields win
                res.update(drafter=str(todo[n]), dtype=dtype, gpu=gpu.get("name"),
                           server_env=server_env or {},
                           servers_measured_together=len(live))
                (out / "sglang" / f"{n}_T{t:g}.json").write_text(json.dumps(res, indent=2))
                print(f"[study] sglang {n} T={t:g}: tau {res['tau']}", flush=True)

        for n, srv in servers.items():
            if not ready[n]:
                logger.error("server %s did not start: %s", n, srv.log_tail(5))
        live = {n: srv for n, srv in servers.items() if ready[n]}

        async def all_servers() -> None:
            await asyncio.gather(*(one_server(n, srv) for n, srv in live.items()))

        asyncio.run(all_servers())
    finally:
        for s in servers.values():
            s.stop()


def _block_size(drafter: Path) -> int | None:
    cfg = json.loads((Path(drafter) / "config.json").read_text())
    return (cfg.get("dflash_config") or {}).get("block_size") or cfg.get("block_size")


def _size_mb(path: Path) -> float | None:
    from .recipe import _dir_mb

    return round(_dir_mb(path), 2) if path.exists() else None


def stage_report(names: list[str], refs: dict[str, Path], out: Path, temps: list[float],
                 dest: Path, prov: dict) -> dict:
    rows = []
    recipe_file = out / "final_recipe.json"
    recipe = json.loads(recipe_file.read_text()) if recipe_file.exists() else None
    finals = finals_of(out)
    for n in list(names) + finals + list(refs):
        summ_path = out / n / "summary.json"
        summ = json.loads(summ_path.read_text()) if summ_path.exists() else {}
        m = _last_metrics(out / n)
        change = (VARIANTS[n][0] if n in VARIANTS else
                  f"{FINALS[n][0]} ({recipe['description'] if recipe else '?'})"
                  if n in FINALS else f"reference: {refs[n]}")
        row = {"name": n, "change": change,
               "steps": summ.get("steps_done"), "train_s": summ.get("wall_s"),
               "acc_final": m.get("acc_final"), "tau_est": m.get("tau_est"),
               "size_mb": _size_mb(refs[n] if n in refs else out / n / "drafter")}
        for backend in ("eval", "sglang"):
            for t in temps:
                f = out / backend / f"{n}_T{t:g}.json"
                row[f"{backend}_T{t:g}"] = json.loads(f.read_text()) if f.exists() else None
        rows.append(row)
    data = {**prov, "variants": {n: VARIANTS[n][0] for n in names}, "rows": rows,
            "temperatures": temps, "final_recipe": recipe,
            "ratios_vs_base": ratios_vs_base(rows, temps)}
    for extra in ("regen_info.json", "train_info.json", "final_info.json"):
        if (out / extra).exists():
            data[extra.removesuffix(".json")] = json.loads((out / extra).read_text())
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "study.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (dest / "study.md").write_text(render(data))
    return data


def ratios_vs_base(rows: list[dict], temps: list[float]) -> dict:
    """Every row's tau over base's, per backend and temperature, with a paired bootstrap 95 %
    interval over the held-out prompts (``bench.stats.paired_tau_ratio``); {} without base."""
    from ..bench.stats import paired_tau_ratio

    base = next((r for r in rows if r["name"] == "base"), None)
    if base is None:
        return {}
    out = {}
    for r in rows:
        if r is base:
            continue
        cells = {}
        for backend, label in (("eval", "HF"), ("sglang", "SGLang")):
            for t in temps:
                mine, ref = r.get(f"{backend}_T{t:g}"), base.get(f"{backend}_T{t:g}")
                pa = (mine or {}).get("per_prompt_tokens_rounds")
                pb = (ref or {}).get("per_prompt_tokens_rounds")
                if pa and pb and len(pa) == len(pb):
                    cells[f"{label} T={t:g}"] = paired_tau_ratio(pa, pb)
        out[r["name"]] = cells
    return out


def _tau(cell) -> str:
    return "-" if not cell or cell.get("tau") is None else f"{cell['tau']:.3f}"


def render(data: dict) -> str:
    temps = data["temperatures"]
    git = data.get("git") or {}
    lines = ["# Drafter recipe study", "",
             f"- date: {data.get('date')}; commit {git.get('commit')} (dirty: "
             f"{git.get('dirty')}); versions {json.dumps(data.get('versions'))}",
             f"- command: `{data.get('command')}`",
             f"- regen: {json.dumps(data.get('regen_info'))}; "
             f"train: {json.dumps(data.get('train_info'))}",
             *([f"- final: {json.dumps(data.get('final_info'))}; recipe adopted: "
                f"{(data.get('final_recipe') or {}).get('adopted')}"]
               if data.get("final_info") or data.get("final_recipe") else []), "",
             "tau = committed tokens / verification rounds (accepted drafts + the bonus) over "
             "the held-out prompts; HF = the Transformers backend ("
             + ", ".join(sorted({(r[f"eval_T{t:g}"] or {}).get("dtype", "float32")
                                 for r in data["rows"] for t in temps
                                 if r[f"eval_T{t:g}"]}) or ["float32"])
             + "), SGLang = one server "
             "per drafter, whole block every round. acc_final / tau_est: the last training "
             "record (training batches).", "",
             "| variant | change | steps | train s | acc_final | tau_est | "
             + " | ".join(f"HF T={t:g}" for t in temps) + " | "
             + " | ".join(f"SGLang T={t:g}" for t in temps) + " | MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | "
             + " | ".join("---:" for _ in temps * 2) + " | ---: |"]
    for r in data["rows"]:
        f = (lambda v, fmt: "-" if v is None else format(v, fmt))
        lines.append(f"| {r['name']} | {r['change']} | {f(r['steps'], 'd')} | "
                     f"{f(r['train_s'], '.0f')} | {f(r['acc_final'], '.3f')} | "
                     f"{f(r['tau_est'], '.2f')} | "
                     + " | ".join(_tau(r[f'eval_T{t:g}']) for t in temps) + " | "
                     + " | ".join(_tau(r[f'sglang_T{t:g}']) for t in temps)
                     + f" | {f(r['size_mb'], '.2f')} |")
    ratios = data.get("ratios_vs_base") or {}
    if any(ratios.values()):
        cols = [f"{b} T={t:g}" for b in ("HF", "SGLang") for t in temps]
        lines += ["", "tau over base's on the same prompts, with a paired bootstrap 95 % "
                  "interval over the prompts (2000 resamples; it covers the prompt sample, not "
                  "the randomness of one training run): an interval that contains 1.00 is not "
                  "a measured difference. Here tau is emitted tokens / rounds per prompt "
                  "(`per_prompt_tokens_rounds`); the Transformers backend's tau column also "
                  "counts the tokens a last round commits past the length limit, so its "
                  "ratios differ from these in the third digit.", "",
                  "| variant | " + " | ".join(cols) + " |",
                  "| --- | " + " | ".join("---:" for _ in cols) + " |"]
        for name, cells in ratios.items():
            lines.append(f"| {name} | " + " | ".join(
                "-" if not cells.get(c) or cells[c].get("ratio") is None else
                f"{cells[c]['ratio']:.3f} [{cells[c]['lo']:.3f}-{cells[c]['hi']:.3f}]"
                for c in cols) + " |")
    return "\n".join(lines) + "\n"


# ---- CLI ------------------------------------------------------------------------------------
def build_parser():
    from ..cli._common import CliParser

    p = CliParser(prog=PROG, description=__doc__)
    p.add_argument("--stages", default="regen,train,eval,report",
                   help=f"comma-separated subset of {','.join(STAGES)} "
                        "(default: regen,train,eval,report)")
    p.add_argument("--target", default=str(ROOT / "assets" / "domino-tiny" / "target"),
                   metavar="DIR", help="the frozen target, a Hugging Face folder with its "
                   "tokenizer (default: the shipped assets/domino-tiny/target)")
    p.add_argument("--prompts", default=".data/regen_prompts.jsonl", metavar="FILE",
                   help="training prompts to regenerate, JSONL (.gz too) with input_ids "
                        "(default: .data/regen_prompts.jsonl, from the recipe's prepare stage)")
    p.add_argument("--multiturn-prompts", default=None, metavar="FILE",
                   help="prompts with their conversation context (the recipe's prepare stage "
                        "writes regen_prompts_multiturn.jsonl): the regen stage answers them "
                        "too, for the variant multiturn (default: none)")
    p.add_argument("--heldout", default=str(ROOT / "assets" / "domino-tiny" /
                                            "heldout_prompts.jsonl"), metavar="FILE",
                   help="held-out prompts for tau (default: the shipped held-out prompts)")
    p.add_argument("--out", default="runs/study", metavar="DIR",
                   help="study folder (default: runs/study)")
    p.add_argument("--variants", default=",".join(DEFAULT_SET),
                   help="comma-separated variant names (default: %(default)s)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME=DIR",
                   help="an existing drafter to evaluate beside the variants (repeatable)")
    p.add_argument("--time-limit-s", type=float, default=420.0, metavar="S",
                   help="training seconds per variant (default: 420)")
    p.add_argument("--regen-time-limit-s", type=float, default=None, metavar="S",
                   help="stop regenerating after this many seconds (whole shards are kept; "
                        "the half / all split uses the shards done) (default: no limit)")
    p.add_argument("--final-time-limit-s", type=float, default=None, metavar="S",
                   help="training seconds per final drafter (default: --time-limit-s)")
    p.add_argument("--final-adopt", default=None, metavar="NAMES",
                   help="comma-separated variants whose changes the final drafters adopt, "
                        "instead of the pick from this folder's tau (for choices made over "
                        "several studies, e.g. data2x,gamma4,batch64,lrconst,multiturn; "
                        "data2x with multiturn trains on every single- and multi-turn "
                        "answer). Default: the pick")
    p.add_argument("--pick-margin", type=float, default=0.01, metavar="F",
                   help="a variant is adopted by the final stage when its tau beats base's "
                        "by this fraction at the mean over every tau measured (backends and "
                        "temperatures) and loses no more than this in any one (default: 0.01)")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="parallel processes for train / eval (default: every variant at once "
                        "for train; for eval 2 on a CPU, 1 on a GPU)")
    p.add_argument("--num-prompts", type=int, default=64, metavar="N",
                   help="held-out prompts for tau (default: 64)")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                   help="new tokens per prompt for tau (default: 128)")
    p.add_argument("--temperatures", default="0,1", help="for tau (default: 0,1)")
    p.add_argument("--device", default="auto", help="eval device: auto, cpu, cuda "
                   "(default: auto)")
    p.add_argument("--eval-dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="target and drafter dtype of the eval stage (default: float32; float16 "
                        "is what the SGLang servers run)")
    p.add_argument("--concurrency", type=int, default=8, metavar="N",
                   help="requests in flight per SGLang server (default: 8)")
    p.add_argument("--dtype", default="float16", help="SGLang servers' dtype (default: float16)")
    p.add_argument("--base-port", type=int, default=31000, metavar="PORT",
                   help="the sglang stage's first server port; the next drafters take the "
                        "ports after it (default: 31000)")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for every SGLang server, e.g. "
                        "DOMINO_HEAD_IMPL=torch (repeatable; recorded in each result)")
    p.add_argument("--results-dir", default=None, metavar="DIR",
                   help="where report writes study.json / study.md (default: --out)")
    p.add_argument("--commit", default=None, help="commit to record (default: git, or "
                   "$DOMINO_COMMIT)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    # tests only: a command standing in for `python -m sglang.launch_server` (a fake server)
    p.add_argument("--launcher", default=None, help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (the recipe's smoke preset): a CPU check of every stage in "
                        "about a minute, numbers meaningless (default: off)")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..cli._common import run_cli

    return run_cli(PROG, argv, _main)


def _main(argv: list[str]) -> int:
    from ..cli._common import (CliError, check_device, check_input_file, check_model_dir,
                               check_number, check_output_dir)

    args = build_parser().parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise CliError("--stages", args.stages, f"unknown stage {bad[0]!r}" if bad else
                       "no stage given", f"choose from {','.join(STAGES)}")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise CliError("--variants", args.variants, f"unknown variant {unknown[0]!r}",
                       f"choose from {','.join(VARIANTS)}")
    refs = {}
    for spec in args.reference:
        name, eq, path = spec.partition("=")
        if not eq or not name:
            raise CliError("--reference", spec, "expected NAME=DIR", None)
        refs[name] = check_model_dir("--reference", path, "drafter")
    server_env = {}
    for spec in args.server_env:
        key, eq, value = spec.partition("=")
        if not eq or not key:
            raise CliError("--server-env", spec, "expected KEY=VALUE", "e.g. DOMINO_HEAD_IMPL=torch")
        server_env[key] = value
    try:
        temps = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError:
        raise CliError("--temperatures", args.temperatures, "not a list of numbers",
                       "e.g. 0,1") from None
    for t in temps:
        check_number("--temperatures", t, ge=0)
    check_number("--time-limit-s", args.time_limit_s, gt=0)
    check_number("--regen-time-limit-s", args.regen_time_limit_s, gt=0)
    check_number("--final-time-limit-s", args.final_time_limit_s, gt=0)
    check_number("--pick-margin", args.pick_margin, ge=0, lt=1)
    adopt = None
    if args.final_adopt is not None:
        adopt = [n.strip() for n in args.final_adopt.split(",") if n.strip()]
        try:
            recipe_of(adopt)
        except ValueError as exc:
            raise CliError("--final-adopt", args.final_adopt, str(exc),
                           f"choose among {', '.join(GROUPS)}, one per group") from None
    check_number("--jobs", args.jobs, ge=0)
    check_number("--num-prompts", args.num_prompts, gt=0)
    check_number("--max-new-tokens", args.max_new_tokens, gt=0)
    check_number("--concurrency", args.concurrency, gt=0)
    check_number("--base-port", args.base_port, ge=1024, le=65000)
    check_device("--device", args.device)
    target = check_model_dir("--target", args.target, "target")
    out = check_output_dir("--out", args.out)
    if "regen" in stages:
        prompts = check_input_file("--prompts", args.prompts)
        multiturn = (check_input_file("--multiturn-prompts", args.multiturn_prompts)
                     if args.multiturn_prompts else None)
    if {"eval", "sglang"} & set(stages):
        heldout = check_input_file("--heldout", args.heldout)
    for st in ("train", "final"):
        if st in stages and "regen" not in stages and not (out / "regen").exists():
            raise CliError("--out", args.out, f"stage {st} needs {out / 'regen'}",
                           "run the regen stage first (add it to --stages)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    quiet = not sys.stderr.isatty()
    from ..bench.harness import provenance

    prov = provenance(commit=args.commit)
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"commit": prov["git"].get("commit"), "dirty": prov["git"].get("dirty"),
             "gpu": prov["gpu"].get("name"), "versions": prov["versions"],
             "command": prov["command"], "date": prov["date"]}
    if "regen" in stages:
        info = stage_regen(target, prompts, out, args.smoke, args.seed, quiet,
                           args.regen_time_limit_s, multiturn)
        info.update(stamp)
        (out / "regen_info.json").write_text(json.dumps(info, indent=2) + "\n")
        logger.info("regen: %s", info)
    if "train" in stages:
        info = stage_train(names, target, out, args.time_limit_s,
                           args.jobs or len(names), args.smoke, args.seed)
        info.update(stamp)
        (out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    device = ("cuda" if _cuda() else "cpu") if args.device == "auto" else args.device
    eval_jobs = args.jobs or (1 if device.startswith("cuda") else 2)

    def evaluate(drafters: dict[str, Path]) -> None:
        stage_eval(drafters, target, heldout, out, args.num_prompts, args.max_new_tokens, temps,
                   eval_jobs, args.seed, device, args.eval_dtype, stamp)

    if "eval" in stages:
        evaluate(drafters_of(names, out, refs))
    if "final" in stages:
        info = stage_final(names, target, out, temps,
                           args.final_time_limit_s or args.time_limit_s, args.jobs, args.smoke,
                           args.seed, args.pick_margin, adopt)
        info.update(stamp)
        (out / "final_info.json").write_text(json.dumps(info, indent=2) + "\n")
        if "eval" in stages:  # the final drafters' tau, as the variants' above
            evaluate(drafters_of([], out, {}))
    if "sglang" in stages:
        stage_sglang(drafters_of(names, out, refs), target, heldout, out, args.num_prompts,
                     args.max_new_tokens, temps, args.concurrency, args.seed, args.dtype,
                     args.launcher, server_env, args.base_port, stamp)
    if "report" in stages:
        dest = Path(args.results_dir) if args.results_dir else out
        data = stage_report(names, refs, out, temps, dest, prov)
        print(render(data))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
