"""domino-train: train one Domino (or plain DFlash) drafter against a frozen Hugging Face target.

Every training setting is a flag (--optim.steps 2000, --drafter.head false,
--loss.curriculum false). --config FILE (JSON with the same names, underscores as in the field
names: {"out_dir": ..., "optim": {"batch_size": 8}}) is read first and flags override it;
--print-config shows the result. The output folder gets checkpoint.pt (an interrupted run
resumes from it), metrics.jsonl, loss_curves.png, summary.json and the trained drafter, in the
public checkpoint format, under drafter/.

Examples (DATA is a token dataset folder of part-*.npz files, e.g. runs/recipe/regen written by
the recipe: python -m domino_sglang.train.recipe --help):

  domino-train --target assets/domino-tiny/target --data DATA --out-dir runs/domino
  domino-train --target assets/domino-tiny/target --data DATA --out-dir runs/dflash \\
      --drafter.head false          # plain DFlash: the same backbone, no Domino head
  domino-train --target assets/domino-tiny/target --data DATA --out-dir runs/nocurr \\
      --loss.curriculum false       # Domino without the curriculum (ablation)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from ..train.cliutil import add_model_flags, explain, resolve
from ..train.config import TrainConfig
from ._common import (CliError, CliParser, check_device, check_input_file, check_model_dir,
                      check_output_dir, run_cli)

PROG = "domino-train"
# plain-words help for the flags whose field descriptions are terse
HELP = {
    "target": "local folder of the Hugging Face target model, with its tokenizer",
    "data": "token dataset folder (part-*.npz files: prompt + response token ids and a loss "
            "mask)",
    "out_dir": "output folder: checkpoint, metrics, plots and the trained drafter (created "
               "when training starts)",
    "drafter.block_size": "tokens per draft block: the last accepted token + this many - 1 "
                          "proposals",
    "drafter.gru_hidden_dim": "hidden size of the Domino head's GRU",
    "drafter.rank": "rank of the Domino head's logit correction",
    "drafter.shift_label": "proposal i reads the hidden state of block position i (true, as "
                           "the public Domino checkpoints) or i+1 (false, as public DFlash)",
    "drafter.pure_draft_prefix_len": "leading proposals drafted without the head's correction",
    "drafter.mask_token_id": "token id that fills the not-yet-drafted block positions "
                             "(default: the tokenizer's mask token)",
    "loss.gamma": "later block positions weigh less: weight exp(-(k-1)/gamma); 7 suits block 16",
    "loss.curriculum": "base-anchored curriculum: train the drafter's own proposals first, "
                       "then the corrected ones (false = corrected ones only, an ablation)",
    "loss.curriculum_frac": "fraction of training over which the curriculum weight falls "
                            "from 1 to 0",
    "loss.anchors_per_seq": "draft blocks sampled per training sequence",
    "optim.lr": "peak learning rate (cosine schedule after warm-up)",
    "optim.min_lr_ratio": "final learning rate / peak learning rate",
    "optim.warmup_steps": "steps of linear learning-rate warm-up",
    "optim.weight_decay": "AdamW weight decay",
    "optim.betas": "AdamW betas, two numbers",
    "optim.autocast": "bf16 mixed precision on CUDA (CPU runs always use fp32)",
    "seed": "random seed (data order, initial weights)",
    "device": "auto, cpu, cuda or cuda:N",
    "resume": "continue from the checkpoint in the output folder when there is one",
    "time_limit_s": "stop early (and export) after this many seconds",
    "export_dtype": "dtype of the exported drafter weights",
    "quiet": "no progress bar (it is also off when stderr is not a terminal)",
}
METAVARS = {"target": "DIR", "data": "DIR", "out_dir": "DIR", "device": "DEVICE"}


def build_parser() -> CliParser:
    p = CliParser(prog=PROG, description=__doc__)
    p.add_argument("--config", metavar="FILE", default=None,
                   help="JSON file with the training settings; flags override it (default: none)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings as JSON and exit (default: off)")
    add_model_flags(p, TrainConfig, HELP, METAVARS)
    return p


def load_config(args) -> TrainConfig:
    if args.config is not None:
        path = check_input_file("--config", args.config)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CliError("--config", args.config, f"not valid JSON ({exc})",
                           "fix the file") from None
        if not isinstance(data, dict):
            raise CliError("--config", args.config, "must hold a JSON object",
                           'e.g. {"target": "DIR", "data": "DIR", "out_dir": "DIR"}')
    try:
        return resolve(TrainConfig, args, args.config)
    except ValidationError as exc:
        raise CliError("", None, explain(exc), "see domino-train --help") from None


def check_paths(cfg: TrainConfig) -> None:
    """The target, data and output folder are usable; nothing is created here."""
    target = check_model_dir("--target", cfg.target, "target model")
    if cfg.drafter.mask_token_id is None and not ((target / "tokenizer.json").is_file()
                                                  or (target / "tokenizer_config.json").is_file()):
        raise CliError("--target", cfg.target, "no tokenizer in this folder, and "
                       "--drafter.mask-token-id is not set",
                       "save the tokenizer with the model or set --drafter.mask-token-id")
    data = Path(cfg.data).expanduser()
    if not data.is_dir():
        raise CliError("--data", cfg.data, "no such folder",
                       "give a token dataset folder (part-*.npz files)")
    if not any(data.glob("part-*.npz")):
        raise CliError("--data", cfg.data, "no part-*.npz files in this folder",
                       "give a token dataset folder, e.g. the recipe's runs/recipe/regen")
    check_output_dir("--out-dir", cfg.out_dir)
    check_device("--device", cfg.device)


def main(argv: list[str] | None = None) -> int:
    def body(argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        cfg = load_config(args)
        if args.print_config:
            print(cfg.model_dump_json(indent=2))
            return 0
        check_paths(cfg)
        logging.basicConfig(level=logging.WARNING if cfg.quiet else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not sys.stderr.isatty():
            cfg = cfg.model_copy(update={"quiet": True})
        from ..train.trainer import DrafterTrainer

        out = DrafterTrainer(cfg).train()
        logging.getLogger(__name__).info("drafter exported to %s", out)
        return 0

    return run_cli(PROG, argv, body)


if __name__ == "__main__":
    sys.exit(main())
