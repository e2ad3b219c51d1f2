"""Acceptance length (tau) of drafters on held-out prompts through the Transformers backend."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import torch

logger = logging.getLogger(__name__)


def load_prompts(path: str | Path, limit: int | None = None) -> list[list[int]]:
    """Prompt token ids from a JSONL file (``.jsonl.gz`` too) with an ``input_ids`` field per
    line."""
    import gzip

    out = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        for line in f:
            if line.strip():
                out.append([int(t) for t in json.loads(line)["input_ids"]])
            if limit is not None and len(out) >= limit:
                break
    return out


@torch.no_grad()
def evaluate_tau(target, drafters: dict, prompts: Sequence[Sequence[int]], *,
                 temperatures: Sequence[float], max_new_tokens: int,
                 stop_token_ids: Sequence[int], seed: int = 0, quiet: bool = False,
                 draft_sampling: bool = True) -> dict:
    """tau per drafter and temperature: ``tau`` = committed tokens / verification rounds over
    all prompts (accepted drafts + the bonus, per round); ``tau_prompt_mean`` averages the
    per-prompt values. Sampling uses a CPU generator seeded by (seed, prompt index).
    ``draft_sampling=False``: point-mass drafts at T > 0 (see ``domino_generate``)."""
    from tqdm.auto import tqdm

    from ..hf.generate import domino_generate

    device = next(target.parameters()).device
    results: dict = {}
    for name, drafter in drafters.items():
        results[name] = {}
        for temp in temperatures:
            acc, rounds, per_prompt, ntok, t_total = 0, 0, [], 0, 0.0
            counts = []  # per prompt: [new tokens, verification rounds]
            for j, p in enumerate(tqdm(prompts, desc=f"{name} T={temp}", disable=quiet or None)):
                gen = torch.Generator().manual_seed(seed * 1_000_003 + j)
                r = domino_generate(target, drafter, torch.tensor([list(p)], device=device),
                                    max_new_tokens=max_new_tokens, temperature=temp,
                                    stop_token_ids=stop_token_ids, generator=gen,
                                    draft_sampling=draft_sampling)
                acc += sum(r.accept_lens)
                rounds += r.rounds
                ntok += len(r.tokens)
                t_total += r.total_time_s
                counts.append([len(r.tokens), r.rounds])
                if r.rounds:
                    per_prompt.append(r.tau)
            results[name][f"T={temp:g}"] = {
                "tau": acc / max(1, rounds),
                "tau_prompt_mean": sum(per_prompt) / max(1, len(per_prompt)),
                "rounds": rounds, "new_tokens": ntok, "prompts": len(prompts),
                "wall_s": t_total, "per_prompt_tokens_rounds": counts}
            logger.info("%s T=%g: tau %.3f", name, temp, acc / max(1, rounds))
    return results
