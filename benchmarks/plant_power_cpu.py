#!/usr/bin/env python3
"""How much power the sampled-losslessness PIT test (``benchmarks/sampled_gpu.py``) has against
each planted sampled-drafts verifier, at the trained tiny pair's real distributions (CPU, fp32).

For each of ``--num-prompts`` held-out prompts: the prompt, one bonus token sampled from the
target (T=1), then the first drafted position: the target's p there and the drafter's q for its
first proposal (``domino_rollout_ref`` with sampling at T=1, the head's distribution as
``DOMINO_SAMPLED_DRAFTS=1`` serves it). Each verifier's exact output distribution at that
position is mapped to PIT space (tokens in descending p order, each token's mass spread
uniformly over its PIT interval, as ``dist.pit_value`` randomizes) and averaged over prompts
into ``--bins`` bin probabilities. Power = the share of ``--sims`` simulated tests (``--n`` PIT
values drawn from those bin probabilities, the pre-registered chi-square) with p below
``--power-alpha`` (1e-6), as the GPU test demands of a planted twin; ``correct`` is the control.

Verifiers (after a rejection of a draft x ~ q, accepted with min(1, p/q)):

* ``correct``: the residual max(p - q, 0) (lossless: output p);
* ``residual_p``: p itself (the sampled-drafts plant up to session 16): min(p, q) + TV p;
* ``residual_q``: q (the plant since): min(p, q) + TV q;
* ``accept_px``: drafts accepted with p(x) as if point masses, residual kept.

The first drafted position only: a proxy for every drafted position of the GPU test.
Writes ``plant_power_<stamp>.json`` / ``.md`` (provenance inside)::

    python3 benchmarks/plant_power_cpu.py --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domino_sglang.bench.dist import chi2_sf  # noqa: E402
from domino_sglang.bench.harness import Run, parse_recording_argv, provenance_lines  # noqa: E402

VERIFIERS = ("correct", "residual_p", "residual_q", "accept_px")


def outputs(p: torch.Tensor, q: torch.Tensor) -> dict:
    """Each verifier's output distribution at one position (drafts ~ q, target p)."""
    m = torch.minimum(p, q)
    tv = 1 - m.sum()
    res = (p - q).clamp(min=0)
    res = res / res.sum().clamp(min=1e-30)
    acc = q * p
    return {"correct": m + tv * res, "residual_p": m + tv * p, "residual_q": m + tv * q,
            "accept_px": acc + (1 - acc.sum()) * res}


def pit_bins(p: torch.Tensor, out: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin probabilities of the randomized PIT of draws from ``out`` against reference ``p``."""
    order = torch.argsort(p, descending=True)
    ps, os_ = p[order].double(), out[order].double()
    hi = torch.cumsum(ps, 0)
    lo = hi - ps
    dens = os_ / ps.clamp(min=1e-300)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    return torch.stack([((torch.minimum(hi, edges[b + 1]) - torch.maximum(lo, edges[b]))
                         .clamp(min=0) * dens).sum() for b in range(bins)])


def chi2_isf(alpha: float, dof: int) -> float:
    lo, hi = 0.0, 10.0 * dof + 200.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi2_sf(mid, dof) > alpha else (lo, mid)
    return hi


def power(pi: torch.Tensor, n: int, crit: float, sims: int, gen: torch.Generator) -> float:
    e = n / len(pi)
    counts = torch.stack([torch.bincount(torch.multinomial(pi.float(), n, replacement=True,
                                                           generator=gen), minlength=len(pi))
                          for _ in range(sims)]).double()
    stat = ((counts - e) ** 2 / e).sum(-1)
    return float((stat > crit).double().mean())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=str(ROOT / "assets/domino-tiny"),
                    help="folder with target/, drafter-domino/ and heldout_prompts.jsonl")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=14336, help="PIT values per test (the GPU test's "
                    "T=1 count: 64 prompts x 32 samples x 7 drafted positions)")
    ap.add_argument("--bins", type=int, default=20)
    ap.add_argument("--power-alpha", type=float, default=1e-6)
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks/results")
    return ap


def render(data: dict) -> str:
    lines = ["# Power of the PIT test against planted sampled-drafts verifiers (CPU)", "",
             *provenance_lines(data.get("meta") or {}),
             f"- {data.get('prompts')} prefixes, mean TV(p, q) at the first drafted position "
             f"{data.get('mean_tv')}; n = {data.get('n')} PIT values, {data.get('bins')} bins, "
             f"chi-square critical value at {data.get('power_alpha')}: {data.get('critical')}",
             "", "| verifier | max bin deviation | noncentrality | mean PIT z | power |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in (data.get("verifiers") or {}).items():
        lines.append(f"| {name} | {r['max_bin_dev']} | {r['noncentrality']} | "
                     f"{r['mean_pit_z']} | {r['power']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_recording_argv(build_parser(), argv, __file__)
    from domino_sglang.cli.main import load_pair
    from domino_sglang.core.rollout import domino_rollout_ref
    from domino_sglang.core.sampling import SamplingParams, logits_to_probs
    from domino_sglang.hf.generate import layer_features

    pair = Path(args.pair)
    target, drafter = load_pair(pair / "target", pair / "drafter-domino", "float32", "cpu")[:2]
    cfg = drafter.config
    embed = target.get_input_embeddings().weight.float()
    lm = target.get_output_embeddings().weight.float()
    head = drafter.head_weights()
    params = SamplingParams(torch.ones(1), torch.full((1,), 1 << 30), torch.ones(1))
    prompts = [json.loads(x)["input_ids"] for x in
               (pair / "heldout_prompts.jsonl").read_text().splitlines()][: args.num_prompts]
    gen = torch.Generator().manual_seed(args.seed)
    k = cfg.resolved_block_size
    acc = {v: torch.zeros(args.bins, dtype=torch.float64) for v in VERIFIERS}
    tvs = []
    with Run(args.out_dir, "plant_power", args.argv, args.commit, render=render) as run, \
            torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            out = target(x, output_hidden_states=True)
            ctx = drafter.extend_context(None, layer_features(out.hidden_states,
                                                              cfg.target_layer_ids),
                                         torch.arange(x.shape[1])[None])
            bonus = int(torch.multinomial(logits_to_probs(out.logits[:, -1:], params)[0, 0], 1,
                                          generator=gen))
            block = torch.full((1, k), cfg.mask_token_id, dtype=torch.long)
            block[0, 0] = bonus
            hidden = drafter(embed[block], torch.arange(x.shape[1], x.shape[1] + k)[None], ctx)
            roll = domino_rollout_ref(hidden[:, :2], block[:, 0], lm, embed, head,
                                      shift_label=cfg.shift_label,
                                      pure_prefix_len=cfg.pure_draft_prefix_len, sampling=params,
                                      uniforms=torch.rand(1, 1, generator=gen))
            q = roll.draft_probs[0, 0].float()
            x2 = torch.cat([x, torch.tensor([[bonus]])], 1)
            p = logits_to_probs(target(x2).logits[:, -1:], params)[0, 0].float()
            tvs.append(float(1 - torch.minimum(p, q).sum()))
            for name, o in outputs(p, q).items():
                acc[name] += pit_bins(p, o, args.bins)
        crit = chi2_isf(args.power_alpha, args.bins - 1)
        res = {}
        for name, tot in acc.items():
            pi = tot / len(prompts)
            lam = args.n * float(((pi - 1 / args.bins) ** 2 * args.bins).sum())
            shift = float(((torch.arange(args.bins) + 0.5) / args.bins * pi).sum() - 0.5)
            res[name] = {"bins": [round(float(v), 5) for v in pi],
                         "max_bin_dev": round(float((pi - 1 / args.bins).abs().max()), 5),
                         "noncentrality": round(lam, 1),
                         "mean_pit_z": round(shift * math.sqrt(12 * args.n), 2),
                         "power": power(pi, args.n, crit, args.sims, gen)}
            print(name, json.dumps({k_: v for k_, v in res[name].items() if k_ != "bins"}),
                  flush=True)
        run.data.update(prompts=len(prompts), mean_tv=round(sum(tvs) / len(tvs), 4), n=args.n,
                        bins=args.bins, power_alpha=args.power_alpha, critical=round(crit, 2),
                        sims=args.sims, verifiers=res)
    print(f"wrote {', '.join(str(x) for x in run.paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
