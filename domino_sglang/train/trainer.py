"""Drafter training against a frozen HF target (online hidden-state capture), and the small
target's own pre-training. Both checkpoint, resume, log metrics and plot loss curves."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import DrafterConfig
from ..core.drafter import DominoDrafter
from .config import DrafterArch, OptimConfig, TargetTrainConfig, TrainConfig
from .data import TokenDataset, load_dataset, pad_batch
from .loss import curriculum_lambda, drafter_loss, lr_at, progress, sample_anchors

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_target_layer_ids(num_layers: int) -> list[int]:
    """Up to 5 evenly spaced layers in [0, n-2] (the last layer's output is left out: HF may
    return it after the final norm, SGLang before)."""
    hi = max(0, num_layers - 2)
    n = min(5, hi + 1)
    return sorted({int(round(x)) for x in np.linspace(0, hi, n)})


def build_drafter_config(target_cfg, arch: DrafterArch, mask_token_id: int) -> DrafterConfig:
    """Public-format drafter config for a target (an HF config)."""
    n_t = target_cfg.num_hidden_layers
    dflash: dict = {"block_size": arch.block_size,
                    "target_layer_ids": arch.target_layer_ids or default_target_layer_ids(n_t),
                    "mask_token_id": mask_token_id, "shift_label": arch.shift_label}
    if arch.head:
        dflash.update(projector_type="domino", gru_hidden_dim=arch.gru_hidden_dim,
                      emb_dim=arch.rank, pure_draft_prefix_len=arch.pure_draft_prefix_len)
    rope = getattr(target_cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(target_cfg, "rope_theta", 1_000_000.0))
    return DrafterConfig.from_dict({
        "architectures": ["DFlashDraftModel"], "model_type": "qwen3",
        "hidden_size": target_cfg.hidden_size,
        "intermediate_size": arch.intermediate_size or target_cfg.intermediate_size,
        "num_hidden_layers": arch.num_hidden_layers,
        "num_attention_heads": target_cfg.num_attention_heads,
        "num_key_value_heads": target_cfg.num_key_value_heads,
        "head_dim": getattr(target_cfg, "head_dim", None),
        "vocab_size": target_cfg.vocab_size, "rms_norm_eps": target_cfg.rms_norm_eps,
        "rope_theta": theta, "max_position_embeddings": target_cfg.max_position_embeddings,
        "num_target_layers": n_t, "block_size": arch.block_size, "dtype": "float32",
        "dflash_config": dflash})


def init_drafter(drafter: DominoDrafter, std: float = 0.02) -> None:
    """HF-style init (normal(0, std) linears); the correction's output layer starts at zero so
    that the head begins as a no-op on top of the base logits."""
    for m in drafter.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if drafter.has_head:
        nn.init.zeros_(drafter.embed_proj[2].weight)


def make_optimizer(params, optim: OptimConfig) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=optim.lr, betas=optim.betas)


def _autocast(device: torch.device, optim: OptimConfig):
    enabled = optim.autocast == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class MetricsLog:
    """metrics.jsonl in the run dir; on resume, records past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists() and resume_step > 0:
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            rows = [r for r in rows if r["step"] <= resume_step]
        self.rows = rows
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def plot_curves(rows: list[dict], path: Path, title: str, keys=("ce_base", "ce_final")) -> bool:
    """Loss curves (and lam on a second axis when present) as a PNG. Returns False (with a
    warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot written to %s", path)
        return False
    if not rows:
        return False
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        if k in rows[0]:
            ax.plot(steps, [r[k] for r in rows], label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if "lam" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["lam"] for r in rows], "k--", alpha=0.5, label="lam")
        ax2.set_ylabel("lam (weight of CE_base)")
        ax2.set_ylim(-0.05, 1.05)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper right")
    else:
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _progress(total: int, initial: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=quiet or None, unit="step")


def load_target(path: str, device: torch.device, dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    target = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class DrafterTrainer:
    """One drafter (Domino or plain DFlash) against a frozen target."""

    def __init__(self, cfg: TrainConfig, target=None, dataset: TokenDataset | None = None):
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out_dir)  # created once the target and the data have loaded
        self.target = target if target is not None else load_target(cfg.target, self.device)
        mask_id = cfg.drafter.mask_token_id
        if mask_id is None:
            tok = AutoTokenizer.from_pretrained(cfg.target)
            if tok.mask_token_id is None:
                raise ValueError(f"drafter.mask_token_id: unset and the tokenizer of "
                                 f"{cfg.target} has no mask token")
            mask_id = tok.mask_token_id
        self.pad_id = int(getattr(self.target.config, "pad_token_id", None) or 0)
        self.dcfg = build_drafter_config(self.target.config, cfg.drafter, mask_id)
        self.dcfg.check_against_target(self.target.config)
        torch.manual_seed(cfg.seed)
        self.drafter = DominoDrafter(self.dcfg)
        init_drafter(self.drafter)
        self.drafter.to(self.device).train()
        self.opt = make_optimizer(self.drafter.parameters(), cfg.optim)
        self.data = dataset if dataset is not None else load_dataset(cfg.data)
        self.step = 0
        self.elapsed_s = 0.0  # training seconds before this process (resume)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.out / "checkpoint.pt"
        if cfg.resume and self.ckpt_path.exists():
            self._load_checkpoint()
        (self.out / "train_config.json").write_text(cfg.model_dump_json(indent=2) + "\n")

    # ---- checkpoints ----
    def save_checkpoint(self) -> None:
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save({"drafter": self.drafter.state_dict(), "optim": self.opt.state_dict(),
                    "step": self.step, "elapsed_s": self.elapsed_s,
                    "config": self.cfg.model_dump()}, tmp)
        tmp.replace(self.ckpt_path)

    def _load_checkpoint(self) -> None:
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        self.drafter.load_state_dict(state["drafter"])
        self.opt.load_state_dict(state["optim"])
        self.step = int(state["step"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        logger.info("resumed %s at step %d", self.ckpt_path, self.step)

    # ---- batches (deterministic in (seed, step), so a resumed run sees the same data) ----
    def batch(self, step: int):
        o = self.cfg.optim
        rng = np.random.default_rng([self.cfg.seed, step])
        idx = rng.integers(0, len(self.data), size=o.batch_size)
        seqs, masks = zip(*(self.data.get(int(i)) for i in idx))
        ids, lm, lens = pad_batch(seqs, masks, o.max_len, self.pad_id)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        anchors, ok = sample_anchors(lm, lens, self.cfg.loss.anchors_per_seq, gen)
        d = self.device
        return ids.to(d), lm.to(d), lens.to(d), anchors.to(d), ok.to(d)

    @torch.no_grad()
    def target_features(self, ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        from ..hf.generate import layer_features

        att = (torch.arange(ids.shape[1], device=ids.device)[None] < lens[:, None]).long()
        out = self.target(input_ids=ids, attention_mask=att, output_hidden_states=True)
        return layer_features(out.hidden_states, self.dcfg.target_layer_ids)

    def loss_at(self, step: int, frac: float | None = None):
        """Loss of the batch of ``step``; ``frac`` = training progress in [0, 1] (default
        step / steps) sets the curriculum weight lam."""
        c = self.cfg
        ids, lm, lens, anchors, ok = self.batch(step)
        frac = step / c.optim.steps if frac is None else frac
        lam = curriculum_lambda(frac, c.loss.curriculum_frac,
                                c.loss.curriculum and self.drafter.has_head)
        emb = self.target.get_input_embeddings().weight
        head = self.target.get_output_embeddings().weight
        with _autocast(self.device, c.optim):
            feats = self.target_features(ids, lens)
            out = drafter_loss(self.drafter, emb, head, ids, lm, lens, feats, anchors, ok,
                               gamma=c.loss.gamma, lam=lam, use_head=self.drafter.has_head)
        return out, lam

    # ---- loop ----
    def train(self) -> Path:
        c, o = self.cfg, self.cfg.optim
        log = MetricsLog(self.out / "metrics.jsonl", self.step)
        bar = _progress(o.steps, self.step, self.out.name, c.quiet)
        start = time.monotonic()
        stopped_early = False
        elapsed0 = self.elapsed_s
        while True:
            self.elapsed_s = elapsed0 + time.monotonic() - start
            frac = progress(self.step, o.steps, self.elapsed_s, c.time_limit_s)
            if frac >= 1.0:
                stopped_early = self.step < o.steps
                if stopped_early:
                    logger.warning("time budget %.0f s spent at step %d/%d; exporting",
                                   c.time_limit_s, self.step, o.steps)
                break
            lr = lr_at(frac, o.lr, o.warmup_steps / o.steps, o.min_lr_ratio)
            for g in self.opt.param_groups:
                g["lr"] = lr
            out, lam = self.loss_at(self.step, frac)
            self.opt.zero_grad(set_to_none=True)
            out.loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.drafter.parameters(), o.grad_clip)
            self.opt.step()
            self.step += 1
            bar.update(1)
            if self.step % c.log_every == 0 or self.step == o.steps:
                row = {"step": self.step, "loss": float(out.loss.detach()), "ce_base": float(out.ce_base),
                       "ce_final": float(out.ce_final), "acc_base": float(out.acc_base),
                       "acc_final": float(out.acc_final), "lam": lam, "lr": lr,
                       "grad_norm": float(gnorm), "progress": frac,
                       "elapsed_s": self.elapsed_s}
                if out.tau_estimate is not None:
                    row["tau_est"] = float(out.tau_estimate)
                    row["acc_per_position"] = [round(float(a), 4) for a in out.acc_per_position]
                log.add(row)
                bar.set_postfix(base=f"{row['ce_base']:.3f}", final=f"{row['ce_final']:.3f}",
                                lam=f"{lam:.2f}", tau_est=f"{row.get('tau_est', 0):.2f}")
            if self.step % c.save_every == 0:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        plot_curves(log.rows, self.out / "loss_curves.png",
                    f"{self.out.name}: head={'on' if self.drafter.has_head else 'off'}, "
                    f"curriculum={'on' if c.loss.curriculum else 'off'}")
        return self.export(stopped_early, self.elapsed_s)

    def export(self, stopped_early: bool = False, wall_s: float | None = None) -> Path:
        dtype = getattr(torch, self.cfg.export_dtype)
        self.drafter.eval()
        # the drafter runs in the target's dtype; its config says so
        model = self.drafter
        model.config = model.config.model_copy(update={"dtype": self.cfg.export_dtype})
        model.save_pretrained(self.cfg.export_dir, dtype=dtype)
        summary = {"steps_done": self.step, "steps": self.cfg.optim.steps,
                   "stopped_early": stopped_early, "wall_s": wall_s,
                   "params": sum(p.numel() for p in self.drafter.parameters())}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return self.cfg.export_dir


# ---- the small target's pre-training ------------------------------------------------------------
def build_target(cfg: TargetTrainConfig, tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    qcfg = Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, architectures=["Qwen3ForCausalLM"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return Qwen3ForCausalLM(qcfg)


def stream_windows(tokens: np.ndarray, n: int, seq_len: int, rng: np.random.Generator):
    starts = rng.integers(0, len(tokens) - seq_len, size=n)
    return torch.from_numpy(np.stack([tokens[s: s + seq_len] for s in starts]).astype(np.int64))


@torch.no_grad()
def perplexity(model, tokens: np.ndarray, seq_len: int, max_windows: int, device,
               batch_size: int = 32) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of a held-out token stream."""
    n = min(max_windows, len(tokens) // seq_len)
    if n == 0:
        raise ValueError(f"perplexity: held-out stream of {len(tokens)} tokens is shorter "
                         f"than seq_len={seq_len}")
    win = torch.from_numpy(tokens[: n * seq_len].astype(np.int64)).view(n, seq_len)
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        x = win[i: i + batch_size].to(device)
        logits = model(input_ids=x).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(),
                                                reduction="sum")
        total += float(nll)
        count += x[:, 1:].numel()
    return math.exp(total / count)


def train_target(cfg: TargetTrainConfig, heldout: np.ndarray | None = None) -> Path:
    """Pre-train the small Qwen3 target on random windows of the token stream; saves an HF
    model dir (with the tokenizer) in ``out_dir/model`` and returns it."""
    from transformers import AutoTokenizer

    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    if len(tok) > cfg.vocab_size:
        raise ValueError(f"vocab_size={cfg.vocab_size}: the tokenizer has {len(tok)} tokens")
    torch.manual_seed(cfg.seed)
    model = build_target(cfg, tok).to(device).train()
    stream = load_dataset(cfg.data).tokens
    o = cfg.optim
    opt = make_optimizer(model.parameters(), o)
    step, elapsed0, elapsed = 0, 0.0, 0.0
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step = int(state["step"])
        elapsed0 = float(state.get("elapsed_s", 0.0))
    log = MetricsLog(out / "metrics.jsonl", step)
    bar = _progress(o.steps, step, "target", cfg.quiet)
    start = time.monotonic()
    stopped = False

    def save():
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                    "elapsed_s": elapsed},
                   ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)

    while True:
        elapsed = elapsed0 + time.monotonic() - start
        frac = progress(step, o.steps, elapsed, cfg.time_limit_s)
        if frac >= 1.0:
            stopped = step < o.steps
            break
        lr = lr_at(frac, o.lr, o.warmup_steps / o.steps, o.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        x = stream_windows(stream, o.batch_size, cfg.seq_len,
                           np.random.default_rng([cfg.seed, step])).to(device)
        with _autocast(device, o):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == o.steps:
            log.add({"step": step, "ce": float(loss.detach()), "lr": lr,
                     "grad_norm": float(gnorm), "progress": frac, "elapsed_s": elapsed})
            bar.set_postfix(ce=f"{float(loss.detach()):.3f}")
        if step % cfg.save_every == 0:
            save()
    bar.close()
    save()
    model.eval()
    summary = {"steps_done": step, "steps": o.steps, "stopped_early": stopped,
               "wall_s": elapsed,
               "params": sum(p.numel() for p in model.parameters())}
    if heldout is not None:
        with _autocast(device, o):
            summary["heldout_ppl"] = perplexity(model, heldout, cfg.seq_len, 256, device)
    plot_curves(log.rows, out / "loss_curve.png", "target pre-training", keys=("ce",))
    model_dir = out / "model"
    model.to(torch.bfloat16).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "target_train_config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    return model_dir
