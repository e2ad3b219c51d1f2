"""The recipe that reproduces the project's small target and its three drafters from scratch.

Stages (--stages, comma-separated, run in this order):

  prepare   (CPU, ~3 min) ShareGPT -> byte-level BPE tokenizer (vocab 4096, ChatML chat
            template, <|mask|> token) -> training and held-out token streams, prompts to
            regenerate (and, for the study's multi-turn data point, prompts with their
            conversation context), held-out prompts, all under --data
  target    pre-train the Qwen3-architecture target (4 layers, hidden 256, tied embeddings)
  regen     the target answers the training prompts (half greedy, half at temperature 1)
  drafters  train Domino, plain DFlash (same backbone, no head) and Domino without the
            curriculum, as three domino-train processes in parallel
  export    copy the models into --assets (the target as a Hugging Face folder with its
            tokenizer, the drafters in the public format)
  eval      held-out perplexity, sample outputs and tau at temperature 0 and 1 of the
            drafters in --assets, written to --out/eval.json

Rebuild the models of assets/domino-tiny from scratch (wall times measured with --preset gpu):

  # 1. CPU (2 cores, 152 s, + ~50 s for the multi-turn prompts): ShareGPT -> tokenizer ->
  #    16M training tokens, prompts
  python -m domino_sglang.train.recipe --data .data --stages prepare
  # 2. one H200 GPU (copy the .data folder there): target 191 s, regeneration of 16384
  #    prompts 36 s, three drafters in parallel 183 s: 410 s in all
  python -m domino_sglang.train.recipe --data .data --out runs/recipe \\
      --assets domino-tiny-recipe --stages target,regen,drafters,export
  # 3. tau and perplexity (a CPU is enough)
  python -m domino_sglang.train.recipe --data .data --out runs/recipe \\
      --assets domino-tiny-recipe --stages eval --threads 1

The models go to --assets (default: ./domino-tiny-recipe); the shipped assets/domino-tiny is
never overwritten unless --overwrite-shipped is given.

The GPU stages have time budgets: the learning rate and the curriculum follow
max(step/steps, elapsed/budget), so each run finishes its schedule on any machine; the step
counts reached on the H200 are in benchmarks/results/train_tiny_summary.json.

--preset smoke runs every stage in a few minutes on a laptop CPU (tiny sizes, meaningless
numbers).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .config import DrafterArch, LossConfig, OptimConfig, TargetTrainConfig, TrainConfig

logger = logging.getLogger(__name__)
_STRICT = ConfigDict(extra="forbid", frozen=True)


class PrepareConfig(BaseModel):
    model_config = _STRICT

    vocab_size: int = Field(default=4096, gt=len(("pad", "im_start", "im_end", "mask")))
    tokenizer_chars: int = Field(default=30_000_000, gt=0, description="text for BPE training")
    heldout_frac: float = Field(default=0.03, gt=0, lt=1)
    max_train_tokens: int = Field(default=16_000_000, gt=0)
    max_heldout_tokens: int = Field(default=400_000, gt=0)
    max_prompt_tokens: int = Field(default=192, gt=0)
    num_regen_prompts: int = Field(default=16384, gt=0)
    num_eval_prompts: int = Field(default=300, gt=0)
    num_multiturn_prompts: int = Field(default=16384, ge=0, description="prompts with their "
                                       "conversation context (the study's multiturn data)")
    max_conversations: int | None = None


class RegenConfig(BaseModel):
    model_config = _STRICT

    max_new_tokens: int = Field(default=256, gt=0)
    temperatures: list[float] = [0.0, 1.0]
    batch_size: int = Field(default=2048, gt=0)
    time_limit_s: float | None = None


class EvalConfig(BaseModel):
    model_config = _STRICT

    num_prompts: int = Field(default=200, gt=0)
    max_new_tokens: int = Field(default=128, gt=0)
    temperatures: list[float] = [0.0, 1.0]
    ppl_windows: int = Field(default=256, gt=0)
    num_samples: int = Field(default=5, ge=0)


class RecipeConfig(BaseModel):
    model_config = _STRICT

    prepare: PrepareConfig = PrepareConfig()
    target: dict = Field(default_factory=dict, description="TargetTrainConfig overrides")
    regen: RegenConfig = RegenConfig()
    drafter: DrafterArch = DrafterArch()
    loss: LossConfig = LossConfig()
    drafter_optim: OptimConfig = OptimConfig()
    drafter_time_limit_s: float | None = None
    eval: EvalConfig = EvalConfig()
    seed: int = 0


PRESETS = {
    # H200, time-budgeted (schedules follow the budget, see loss.progress): target 180 s,
    # regeneration <= 80 s (+ one shard), the three drafters in parallel 165 s
    "gpu": RecipeConfig(
        target={"optim": {"steps": 100_000, "batch_size": 64, "lr": 3e-3,
                          "warmup_steps": 2_000, "weight_decay": 0.1},
                "time_limit_s": 180.0, "save_every": 100_000, "log_every": 100},
        regen=RegenConfig(time_limit_s=80.0),
        drafter_optim=OptimConfig(steps=100_000, batch_size=32, max_len=448, lr=1e-3,
                                  warmup_steps=2_000),
        loss=LossConfig(anchors_per_seq=24),
        drafter_time_limit_s=165.0),
    # CPU smoke test of every stage (minutes; numbers meaningless)
    "smoke": RecipeConfig(
        prepare=PrepareConfig(vocab_size=512, tokenizer_chars=300_000, max_train_tokens=200_000,
                              max_heldout_tokens=20_000, num_regen_prompts=32,
                              num_eval_prompts=8, max_conversations=1500),
        target={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                "seq_len": 128, "optim": {"steps": 30, "batch_size": 8, "lr": 3e-3,
                                          "warmup_steps": 5}, "log_every": 5},
        regen=RegenConfig(max_new_tokens=32, batch_size=16),
        drafter=DrafterArch(block_size=8, gru_hidden_dim=32, rank=16),
        loss=LossConfig(gamma=4.0, anchors_per_seq=4),
        drafter_optim=OptimConfig(steps=20, batch_size=4, max_len=128, warmup_steps=2),
        eval=EvalConfig(num_prompts=4, max_new_tokens=16, ppl_windows=8, num_samples=2)),
}

DRAFTERS = {  # name -> (head, curriculum)
    "drafter-domino": (True, True),
    "drafter-dflash": (False, True),
    "drafter-domino-nocurriculum": (True, False),
}


# ---- stages --------------------------------------------------------------------------------------
def stage_prepare(cfg: PrepareConfig, data: Path, seed: int, quiet: bool) -> None:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from .data import (PAD_TOKEN, TokenDataset, conversation_messages, is_heldout,
                       iter_sharegpt, render_chat, train_tokenizer, write_meta)

    data.mkdir(parents=True, exist_ok=True)
    convs = []
    for item in tqdm(iter_sharegpt(), desc="sharegpt", disable=quiet or None, unit="conv"):
        msgs = conversation_messages(item)
        if msgs:
            convs.append((str(item.get("id", len(convs))), msgs))
        if cfg.max_conversations and len(convs) >= cfg.max_conversations:
            break
    train = [c for c in convs if not is_heldout(c[0], cfg.heldout_frac)]
    held = [c for c in convs if is_heldout(c[0], cfg.heldout_frac)]
    logger.info("%d conversations: %d train, %d held out", len(convs), len(train), len(held))

    tok_dir = data / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        def texts():
            n = 0
            for _, m in train:
                t = render_chat(m)
                n += len(t)
                yield t
                if n >= cfg.tokenizer_chars:
                    return
        train_tokenizer(texts(), cfg.vocab_size, tok_dir)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    pad = tok.convert_tokens_to_ids(PAD_TOKEN)

    def stream(convs_, limit, name):
        seqs, total = [], 0
        for _, m in tqdm(convs_, desc=f"tokenize {name}", disable=quiet or None, unit="conv"):
            ids = tok.encode(render_chat(m), add_special_tokens=False) + [pad]
            seqs.append(ids)
            total += len(ids)
            if total >= limit:
                break
        out = data / name
        out.mkdir(exist_ok=True)
        TokenDataset.from_sequences(seqs, [[1] * len(s) for s in seqs]).save_part(
            out / "part-00000.npz")
        write_meta(out, kind="stream", conversations=len(seqs), tokens=total)

    stream(train, cfg.max_train_tokens, "pretrain")
    stream(held, cfg.max_heldout_tokens, "heldout")

    def prompts(convs_, limit, name, all_turns):
        """Single-turn prompts: the first user turn (held out) or every user turn (training)
        of 20-2000 characters and at most max_prompt_tokens tokens."""
        rows = []
        for cid, m in convs_:
            turns = [t for t in (m if all_turns else m[:1]) if t["role"] == "user"]
            for ti, turn in enumerate(turns):
                if not 20 <= len(turn["content"]) <= 2000:
                    continue
                text = render_chat([turn], add_generation_prompt=True)
                ids = tok.encode(text, add_special_tokens=False)
                if len(ids) > cfg.max_prompt_tokens:
                    continue
                rows.append({"id": f"{cid}/{ti}", "input_ids": ids, "text": turn["content"]})
            if len(rows) >= limit:
                break
        rows = rows[:limit]
        with open(data / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        return len(rows)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_train = prompts([train[i] for i in order], cfg.num_regen_prompts, "regen_prompts.jsonl",
                      all_turns=True)
    n_held = prompts(held, cfg.num_eval_prompts, "heldout_prompts.jsonl", all_turns=False)
    if cfg.num_multiturn_prompts:
        multiturn_prompts([train[i] for i in order], tok, cfg.num_multiturn_prompts,
                          cfg.max_prompt_tokens, data / "regen_prompts_multiturn.jsonl")
    write_meta(data, kind="recipe-data", vocab_size=cfg.vocab_size, regen_prompts=n_train,
               heldout_prompts=n_held, config=cfg.model_dump())
    logger.info("prepared %s: %d regen prompts, %d held-out prompts", data, n_train, n_held)


def multiturn_prompts(convs: Sequence[tuple[str, list[dict]]], tok, limit: int,
                      max_prompt_tokens: int, path: Path) -> int:
    """Prompts with their conversation context: for every user turn after the first (20-2000
    characters), the conversation up to it (earlier user and assistant turns as the dataset
    has them), oldest turns dropped until it fits ``max_prompt_tokens``; kept only where at
    least one assistant turn remains before it. Written to ``path`` (JSONL: id, input_ids,
    turns = the messages kept); returns how many."""
    from .data import render_chat

    def encode(msgs):
        return tok.encode(render_chat(msgs, add_generation_prompt=True), add_special_tokens=False)

    gen = len(tok.encode(render_chat([], add_generation_prompt=True), add_special_tokens=False))
    rows = []
    for cid, m in convs:
        lens = None  # per-message token counts, encoded once per conversation
        for i, turn in enumerate(m):
            if i == 0 or turn["role"] != "user" or not 20 <= len(turn["content"]) <= 2000:
                continue
            if lens is None:
                lens = [len(tok.encode(render_chat([t]), add_special_tokens=False)) for t in m]
            # the chat template renders each message alone, between special tokens, so the
            # counts add up: extend back from turn i while the context still fits
            start, total = i, lens[i] + gen
            while start > 0 and total + lens[start - 1] <= max_prompt_tokens:
                start -= 1
                total += lens[start]
            ids = encode(m[start: i + 1])
            if len(ids) != total:  # not additive after all: the slow exact search
                start = 0
                while True:
                    ids = encode(m[start: i + 1])
                    if len(ids) <= max_prompt_tokens or i - start <= 1:
                        break
                    start += 1
            ctx = m[start: i + 1]
            if len(ctx) < 2 or len(ids) > max_prompt_tokens or \
                    not any(t["role"] == "assistant" for t in ctx[:-1]):
                continue
            rows.append({"id": f"{cid}/{i}", "input_ids": ids, "turns": len(ctx)})
        if len(rows) >= limit:
            break
    rows = rows[:limit]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return len(rows)


def _target_cfg(rc: RecipeConfig, data: Path, out: Path, quiet: bool) -> TargetTrainConfig:
    d = {"data": str(data / "pretrain"), "tokenizer": str(data / "tokenizer"),
         "out_dir": str(out / "target"), "vocab_size": rc.prepare.vocab_size, "seed": rc.seed,
         "quiet": quiet}
    d.update(rc.target)
    return TargetTrainConfig.model_validate(d)


def stage_target(rc: RecipeConfig, data: Path, out: Path, quiet: bool) -> None:
    from .data import load_dataset
    from .trainer import train_target

    held = load_dataset(data / "heldout").tokens
    train_target(_target_cfg(rc, data, out, quiet), heldout=held)


def regenerate(target_dir: Path, prompts_path: Path, out_dir: Path, cfg: RegenConfig,
               seed: int, quiet: bool, time_limit_s: float | None = None) -> int:
    """The target in ``target_dir`` answers every prompt of ``prompts_path`` (prompt ``j`` at
    ``cfg.temperatures[j % n]``) into token-dataset shards under ``out_dir``; stops between
    shards after ``time_limit_s``. Returns the number of prompts answered."""
    import torch
    from transformers import AutoTokenizer

    from .data import regenerate_hf, write_meta
    from .evaluate import load_prompts
    from .trainer import load_target, resolve_device

    device = resolve_device("auto")
    target = load_target(str(target_dir), device)
    tok = AutoTokenizer.from_pretrained(str(target_dir))
    prompts = load_prompts(prompts_path)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        n = regenerate_hf(target, prompts, out_dir, max_new_tokens=cfg.max_new_tokens,
                          temperatures=cfg.temperatures, pad_id=tok.pad_token_id,
                          eos_ids=[tok.eos_token_id], batch_size=cfg.batch_size,
                          shard_size=cfg.batch_size * len(cfg.temperatures),
                          seed=seed, quiet=quiet, time_limit_s=time_limit_s)
    write_meta(out_dir, kind="regen", prompts=n, config=cfg.model_dump())
    return n


def stage_regen(rc: RecipeConfig, data: Path, out: Path, quiet: bool) -> None:
    regenerate(out / "target" / "model", data / "regen_prompts.jsonl", out / "regen", rc.regen,
               rc.seed, quiet, rc.regen.time_limit_s)


def drafter_train_config(rc: RecipeConfig, out: Path, name: str, quiet: bool) -> TrainConfig:
    head, curriculum = DRAFTERS[name]
    return TrainConfig(
        target=str(out / "target" / "model"), data=str(out / "regen"),
        out_dir=str(out / name), drafter=rc.drafter.model_copy(update={"head": head}),
        loss=rc.loss.model_copy(update={"curriculum": curriculum}), optim=rc.drafter_optim,
        seed=rc.seed, time_limit_s=rc.drafter_time_limit_s, quiet=quiet,
        log_every=20, save_every=100_000)


def train_drafters(cfgs: dict[str, TrainConfig], jobs: int, status=None,
                   status_every_s: float = 30.0) -> None:
    """One ``domino-train --config <out_dir>/domino_train.json`` subprocess per config (log:
    ``<out_dir>/train.log``), ``jobs`` at a time; ``status(running names, finished names)``
    every ``status_every_s``. Raises naming the runs that failed, after all have ended."""
    pending = list(cfgs)
    running: dict[str, tuple[subprocess.Popen, object]] = {}
    rcodes: dict[str, int] = {}
    last = time.monotonic()
    while pending or running:
        while pending and len(running) < max(1, jobs):
            name = pending.pop(0)
            run_dir = Path(cfgs[name].out_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg_file = run_dir / "domino_train.json"
            cfg_file.write_text(cfgs[name].model_dump_json(indent=2) + "\n")
            cmd = [sys.executable, "-m", "domino_sglang.cli.train", "--config", str(cfg_file)]
            log = open(run_dir / "train.log", "w")
            log.write(" ".join(cmd) + "\n")
            log.flush()
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                rcodes[name] = proc.returncode
                log.close()
                del running[name]
        if status is not None and time.monotonic() - last >= status_every_s:
            last = time.monotonic()
            status(list(running), sorted(rcodes))
        time.sleep(0.5)
    failed = {n: c for n, c in rcodes.items() if c != 0}
    if failed:
        raise RuntimeError(f"domino-train failed for {failed} (see each run's train.log: "
                           + ", ".join(str(Path(cfgs[n].out_dir) / "train.log") for n in failed)
                           + ")")


def stage_drafters(rc: RecipeConfig, out: Path, quiet: bool, parallel: bool) -> None:
    """The three drafters as ``domino-train`` subprocesses (in parallel on one GPU)."""
    cfgs = {name: drafter_train_config(rc, out, name, quiet) for name in DRAFTERS}
    train_drafters(cfgs, jobs=len(cfgs) if parallel else 1)


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def stage_export(out: Path, assets: Path, data: Path) -> None:
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copytree(out / "target" / "model", assets / "target", dirs_exist_ok=True)
    for name in DRAFTERS:
        shutil.copytree(out / name / "drafter", assets / name, dirs_exist_ok=True)
    shutil.copy(data / "heldout_prompts.jsonl", assets / "heldout_prompts.jsonl")
    sizes = {p.name: round(_dir_mb(p), 2) for p in sorted(assets.iterdir()) if p.is_dir()}
    (assets / "sizes_mb.json").write_text(json.dumps(sizes, indent=2) + "\n")


def stage_eval(rc: RecipeConfig, assets: Path, data: Path, out: Path, quiet: bool,
               threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.drafter import DominoDrafter
    from .data import load_dataset
    from .evaluate import evaluate_tau, load_prompts
    from .trainer import perplexity, resolve_device

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device("auto")
    target = AutoModelForCausalLM.from_pretrained(str(assets / "target"),
                                                  dtype=torch.float32).to(device).eval()
    tok = AutoTokenizer.from_pretrained(str(assets / "target"))
    seq_len = _target_cfg(rc, data, out, quiet).seq_len
    ppl = perplexity(target, load_dataset(data / "heldout").tokens, seq_len,
                     rc.eval.ppl_windows, device)
    prompts = load_prompts(assets / "heldout_prompts.jsonl", rc.eval.num_prompts)
    samples = []
    from ..hf.generate import target_generate

    for p in prompts[: rc.eval.num_samples]:
        g = target_generate(target, torch.tensor([p], device=device), max_new_tokens=96,
                            stop_token_ids=[tok.eos_token_id])
        samples.append({"prompt": tok.decode(p), "greedy_response": tok.decode(g.tokens)})
    drafters = {n: DominoDrafter.from_pretrained(assets / n, dtype=torch.float32,
                                                 device=device).eval() for n in DRAFTERS}
    t0 = time.perf_counter()
    tau = evaluate_tau(target, drafters, prompts, temperatures=rc.eval.temperatures,
                       max_new_tokens=rc.eval.max_new_tokens,
                       stop_token_ids=[tok.eos_token_id], seed=rc.seed, quiet=quiet)
    res = {"heldout_ppl": ppl, "ppl_seq_len": seq_len, "ppl_windows": rc.eval.ppl_windows,
           "tau": tau, "eval_wall_s": time.perf_counter() - t0, "samples": samples,
           "num_prompts": len(prompts), "config": rc.eval.model_dump(),
           "device": str(device), "torch": torch.__version__}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


# ---- CLI ----------------------------------------------------------------------------------------
STAGES = ("prepare", "target", "regen", "drafters", "export", "eval")
PROG = "python -m domino_sglang.train.recipe"
SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "domino-tiny"


def build_parser():
    from ..cli._common import CliParser

    p = CliParser(prog=PROG, description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpu",
                   help="sizes and step counts (default: gpu)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="JSON recipe settings replacing the preset; see --print-config for the "
                        "fields (default: none)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved recipe settings and exit (default: off)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.add_argument("--data", default=".data", metavar="DIR",
                   help="prepared data folder (default: .data)")
    p.add_argument("--out", default="runs/recipe", metavar="DIR",
                   help="run folder: checkpoints, logs, curves (default: runs/recipe)")
    p.add_argument("--assets", default="domino-tiny-recipe", metavar="DIR",
                   help="where the final models go (default: domino-tiny-recipe)")
    p.add_argument("--overwrite-shipped", action="store_true",
                   help="allow --assets to be the shipped assets/domino-tiny (default: off)")
    p.add_argument("--sequential", action="store_true",
                   help="train the drafters one after another (default: in parallel)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads for eval, 0 = torch's default (default: 0)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (default: off; also off when stderr is not a terminal)")
    return p


def is_shipped(assets: Path) -> bool:
    """``assets`` is the repository's assets/domino-tiny (or any folder named like it)."""
    path = assets.expanduser().resolve()
    return path == SHIPPED or (path.name == "domino-tiny" and path.parent.name == "assets")


def load_recipe_config(args) -> RecipeConfig:
    from pydantic import ValidationError

    from ..cli._common import CliError, check_input_file

    if not args.config:
        return PRESETS[args.preset]
    path = check_input_file("--config", args.config)
    try:
        return RecipeConfig.model_validate_json(path.read_text())
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                         for e in exc.errors())
        raise CliError("--config", args.config, errs,
                       "see --print-config for the fields and their values") from None


def check_stage_inputs(stages: list[str], data: Path, out: Path, assets: Path) -> None:
    """What each stage reads exists, or an earlier stage in the list makes it."""
    from ..cli._common import CliError

    def need(path: Path, flag: str, value: Path, stage: str, maker: str) -> None:
        if maker in stages and STAGES.index(maker) < STAGES.index(stage):
            return
        if not path.exists():
            raise CliError(flag, value, f"stage {stage} needs {path}, which does not exist",
                           f"run the {maker} stage first (add it to --stages)")

    for s in stages:
        if s == "target":
            need(data / "pretrain", "--data", data, s, "prepare")
        elif s == "regen":
            need(data / "regen_prompts.jsonl", "--data", data, s, "prepare")
            need(out / "target" / "model", "--out", out, s, "target")
        elif s == "drafters":
            need(out / "target" / "model", "--out", out, s, "target")
            need(out / "regen", "--out", out, s, "regen")
        elif s == "export":
            for name in DRAFTERS:
                need(out / name / "drafter", "--out", out, s, "drafters")
            need(data / "heldout_prompts.jsonl", "--data", data, s, "prepare")
        elif s == "eval":
            need(assets / "target", "--assets", assets, s, "export")
            need(data / "heldout", "--data", data, s, "prepare")


def main(argv: list[str] | None = None) -> int:
    from ..cli._common import run_cli

    return run_cli(PROG, argv, _main)


def _main(argv: list[str]) -> int:
    from ..cli._common import CliError, check_number, check_output_dir

    args = build_parser().parse_args(argv)
    rc = load_recipe_config(args)
    if args.print_config:
        print(rc.model_dump_json(indent=2))
        return 0
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise CliError("--stages", args.stages, f"unknown stage {bad[0]!r}" if bad else
                       "no stage given", f"choose from {','.join(STAGES)}")
    check_number("--threads", args.threads, ge=0, fix="use 0 for torch's default")
    data, out, assets = Path(args.data), Path(args.out), Path(args.assets)
    for flag, path in (("--data", data), ("--out", out), ("--assets", assets)):
        check_output_dir(flag, path)
    if "export" in stages and is_shipped(assets) and not args.overwrite_shipped:
        raise CliError("--assets", args.assets, "is the shipped assets/domino-tiny, which the "
                       "export stage would overwrite", "pick another folder, or add "
                       "--overwrite-shipped to replace the shipped models on purpose")
    check_stage_inputs(stages, data, out, assets)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    quiet = args.quiet or not sys.stderr.isatty()
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe_config.json").write_text(rc.model_dump_json(indent=2) + "\n")
    times = {}
    for s in STAGES:
        if s not in stages:
            continue
        t0 = time.monotonic()
        if s == "prepare":
            stage_prepare(rc.prepare, data, rc.seed, quiet)
        elif s == "target":
            stage_target(rc, data, out, quiet)
        elif s == "regen":
            stage_regen(rc, data, out, quiet)
        elif s == "drafters":
            stage_drafters(rc, out, quiet, parallel=not args.sequential)
        elif s == "export":
            stage_export(out, assets, data)
        elif s == "eval":
            stage_eval(rc, assets, data, out, quiet, args.threads)
        times[s] = round(time.monotonic() - t0, 1)
        logger.info("stage %s done in %.1f s", s, times[s])
        timing_file = out / "stage_times.json"
        old = json.loads(timing_file.read_text()) if timing_file.exists() else {}
        old.update(times)
        timing_file.write_text(json.dumps(old, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
