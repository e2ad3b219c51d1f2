"""``domino-train``: train one Domino (or plain DFlash) drafter against a frozen HF target.

Every field of :class:`domino_sglang.train.config.TrainConfig` is a flag (``--optim.steps 2000``,
``--drafter.head false``, ``--loss.curriculum false``); ``--config FILE`` (JSON) is read first
and flags override it. The run dir gets ``checkpoint.pt`` (resumed automatically),
``metrics.jsonl``, ``loss_curves.png``, ``summary.json`` and the exported drafter in the public
checkpoint format under ``drafter/``.

Examples::

    domino-train --target assets/target --data .data/regen --out_dir runs/domino
    domino-train --target assets/target --data .data/regen --out_dir runs/dflash \\
        --drafter.head false                      # plain DFlash (same backbone, head off)
    domino-train ... --loss.curriculum false      # Domino without the curriculum (ablation)
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from ..train.cliutil import add_model_flags, explain, resolve
from ..train.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="domino-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", default=None,
                   help="JSON file with TrainConfig fields; flags override it (default: none)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as JSON and exit (default: off)")
    add_model_flags(p, TrainConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve(TrainConfig, args, args.config)
    except ValidationError as exc:
        print(f"domino-train: invalid config: {explain(exc)}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    logging.basicConfig(level=logging.WARNING if cfg.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not sys.stderr.isatty():
        cfg = cfg.model_copy(update={"quiet": True})
    from ..train.trainer import DrafterTrainer

    out = DrafterTrainer(cfg).train()
    logging.getLogger(__name__).info("drafter exported to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
