#!/usr/bin/env python3
"""Greedy acceptance length (tau) of draft trees against chains at equal verify cost, on the
CPU in fp32 (issue #15's goal "tree tau >= 1.25x chain tau at equal verify cost").

Greedy speculative decoding is lossless, so every drafter commits the target's own greedy
tokens: a round whose bonus token sits at position p drafts from the target's features of
positions < p, and accepts the longest run of drafts (chain) or the deepest root path (tree)
that matches the target's greedy continuation S[p+1], S[p+2], ...; the next round starts at
p + accepted + 1. So one greedy run of the target per prompt (fp32, up to ``--max-new-tokens``,
stopping at EOS) and one drafter forward per round position give every system's rounds
exactly, with no verify forward (the verifier's answer is the greedy continuation). The chain
simulated this way reproduces ``domino_generate``'s accept lengths round for round
(``tests/bench/test_tree_tau.py``).

Systems: ``chain`` (the Domino head, verify width = block size: 16 tokens for the tiny pair),
``chain-headoff`` (the same drafter's base logits: DFlash), and each ``--trees TOPKxBUDGET``
(``core.tree.build_tree_ref``: a beam over the head, ``BUDGET`` nodes verified, root included,
what tree mode serves) and each ``--best-first TOPKxBUDGET`` (``build_tree_best_first_ref``:
the budget's most probable paths; no kernel builds it yet). A tree of budget 16 verifies as
many tokens as the chain: that is the equal-cost comparison.
Writes ``tree_tau_<stamp>.json`` / ``.md`` (provenance inside)::

    python3 benchmarks/tree_tau_cpu.py --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domino_sglang.bench.harness import Run, parse_recording_argv, provenance_lines  # noqa: E402
from domino_sglang.core.drafter import DraftContextCache  # noqa: E402
from domino_sglang.bench.stats import paired_tau_ratio  # noqa: E402


def _tree_arg(text: str) -> tuple[int, int]:
    try:
        k, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--trees {text!r}: expected TOPKxBUDGET, e.g. 4x16")
    if k < 1 or b < 2:
        raise argparse.ArgumentTypeError(f"--trees {text!r}: topk >= 1 and budget >= 2")
    return k, b


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=str(ROOT / "assets/domino-tiny"),
                    help="folder with target/, the drafter and heldout_prompts.jsonl")
    ap.add_argument("--drafter", default="drafter-domino", help="drafter folder in --pair")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--trees", type=_tree_arg, nargs="+",
                    default=[(2, 16), (4, 16), (8, 16), (4, 32), (8, 32)],
                    metavar="TOPKxBUDGET", help="tree shapes (default 2x16 4x16 8x16 4x32 8x32)")
    ap.add_argument("--best-first", type=_tree_arg, nargs="*", default=[(4, 16), (8, 16), (4, 32)],
                    metavar="TOPKxBUDGET", help="best-first trees (core.tree."
                    "build_tree_best_first_ref: the budget's most probable paths, at most TOPK "
                    "children per node; default 4x16 8x16 4x32; none: no value)")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks/results")
    return ap


def greedy_sequence(target, prompt: list, n: int, eos) -> list:
    """prompt + the target's greedy tokens (fp32, KV cache), stopping after EOS."""
    from domino_sglang.hf.generate import target_generate

    with torch.no_grad():
        return list(prompt) + target_generate(
            target, torch.tensor([prompt]), max_new_tokens=n,
            stop_token_ids=() if eos is None else (eos,)).tokens


class RoundDrafter:
    """The drafter's block hidden states for a round whose bonus sits at position p of one
    greedy sequence (context: the target's features of positions < p), cached per p."""

    def __init__(self, target, drafter, seq: list):
        from domino_sglang.hf.generate import layer_features

        cfg = drafter.config
        self.k = cfg.resolved_block_size
        self.mask = cfg.mask_token_id
        self.drafter, self.seq = drafter, seq
        self.embed = target.get_input_embeddings().weight
        out = target(torch.tensor([seq]), output_hidden_states=True)
        feats = layer_features(out.hidden_states, cfg.target_layer_ids)
        self.ctx = drafter.extend_context(None, feats, torch.arange(len(seq))[None])
        self._hidden: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def hidden(self, p: int) -> torch.Tensor:
        if p not in self._hidden:
            ctx = DraftContextCache([k[:, :, :p] for k in self.ctx.keys],
                                    [v[:, :, :p] for v in self.ctx.values])
            block = torch.full((1, self.k), self.mask, dtype=torch.long)
            block[0, 0] = self.seq[p]
            self._hidden[p] = self.drafter(self.embed[block],
                                           torch.arange(p, p + self.k)[None], ctx)
        return self._hidden[p]


def chain_accept(drafts: list, truth: list) -> int:
    a = 0
    for d, t in zip(drafts, truth):
        if d != t:
            break
        a += 1
    return a


def tree_accept(tokens: list, parents: list, truth: list) -> int:
    """Depth of the deepest root path matching ``truth`` (greedy tree verification)."""
    children: dict[int, list[int]] = {}
    for i, par in enumerate(parents):
        if par >= 0:
            children.setdefault(par, []).append(i)
    node, a = 0, 0
    for t in truth:
        nxt = next((c for c in children.get(node, []) if tokens[c] == t), None)
        if nxt is None:
            break
        node, a = nxt, a + 1
    return a


@torch.no_grad()
def simulate(rd: RoundDrafter, n0: int, propose) -> list:
    """Accept lengths (accepted + 1) of one system's rounds from the bonus at ``n0`` on;
    ``propose(hidden, bonus, truth)`` returns a round's accepted count against the greedy
    continuation ``truth`` (cut at the sequence's end)."""
    seq, lens, p = rd.seq, [], n0
    while p < len(seq) - 1:
        truth = seq[p + 1: p + rd.k]
        a = propose(rd.hidden(p), seq[p], truth)
        lens.append(a + 1)
        p += a + 1
    return lens


def render(data: dict) -> str:
    lines = ["# Tree vs chain acceptance at equal verify cost (CPU, fp32, greedy)", "",
             *provenance_lines(data.get("meta") or {}),
             f"- {data.get('prompts')} prompts, {data.get('tokens')} greedy target tokens "
             f"(<= {data.get('max_new_tokens')} per prompt); block size {data.get('block')}; "
             "tau = committed tokens per round (accepted + bonus), pooled; ratio CI: 95 % "
             "bootstrap over prompts", "",
             "| system | tokens verified per round | rounds | tau | x chain [95 % CI] |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name, r in (data.get("systems") or {}).items():
        ci = r.get("x_chain")
        ci_s = "-" if not ci else f"{ci['ratio']:.3f} [{ci['lo']:.3f}-{ci['hi']:.3f}]"
        lines.append(f"| {name} | {r['verify_tokens']} | {r['rounds']} | {r['tau']:.3f} | "
                     f"{ci_s} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_recording_argv(build_parser(), argv, __file__)
    from domino_sglang.cli.main import load_pair
    from domino_sglang.core.rollout import domino_rollout_ref
    from domino_sglang.core.tree import (best_first_num_nodes, build_tree_best_first_ref,
                                         build_tree_ref, tree_num_nodes)

    pair = Path(args.pair)
    target, drafter = load_pair(pair / "target", pair / args.drafter, "float32", "cpu")[:2]
    cfg = drafter.config
    k = cfg.resolved_block_size
    eos = target.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    embed = target.get_input_embeddings().weight.float()
    lm = target.get_output_embeddings().weight.float()
    head = drafter.head_weights()
    if head is None:
        raise SystemExit(f"--drafter {args.drafter}: no Domino head (trees are built over it)")
    common = dict(shift_label=cfg.shift_label, pure_prefix_len=cfg.pure_draft_prefix_len)

    def chain(hw):
        def f(hidden, bonus, truth):
            roll = domino_rollout_ref(hidden, torch.tensor([bonus]), lm, embed, hw, **common)
            return chain_accept(roll.tokens[0].tolist(), truth)
        return f

    def tree(topk, budget, build=build_tree_ref):
        def f(hidden, bonus, truth):
            t = build(hidden, torch.tensor([bonus]), lm, embed, head, topk=topk,
                      budget=budget, **common)
            return tree_accept(t.tokens[0].tolist(), t.parents[0].tolist(), truth)
        return f

    systems = {"chain": (chain(head), k), "chain-headoff": (chain(None), k)}
    for topk, budget in args.trees:
        systems[f"tree-{topk}x{budget}"] = (tree(topk, budget), tree_num_nodes(k, topk, budget))
    for topk, budget in args.best_first:
        systems[f"best-first-{topk}x{budget}"] = (
            tree(topk, budget, build_tree_best_first_ref),
            best_first_num_nodes(k, topk, budget))
    prompts = [json.loads(x)["input_ids"] for x in
               (pair / "heldout_prompts.jsonl").read_text().splitlines()
               if x.strip()][: args.num_prompts]
    per_prompt = {n: [] for n in systems}  # [(tokens, rounds)] per prompt
    n_tokens = 0
    with Run(args.out_dir, "tree_tau", args.argv, args.commit, render=render) as run:
        for i, prompt in enumerate(prompts):
            seq = greedy_sequence(target, prompt, args.max_new_tokens, eos)
            rd = RoundDrafter(target, drafter, seq)
            n_tokens += len(seq) - len(prompt)
            for name, (fn, _) in systems.items():
                lens = simulate(rd, len(prompt), fn)
                per_prompt[name].append((sum(lens), len(lens)))
            if (i + 1) % 8 == 0 or i + 1 == len(prompts):
                print(f"{i + 1}/{len(prompts)} prompts: " + ", ".join(
                    f"{n} {sum(t for t, _ in v) / max(1, sum(r for _, r in v)):.3f}"
                    for n, v in per_prompt.items()), flush=True)
        res = {}
        for name, (_, verify) in systems.items():
            toks = sum(t for t, _ in per_prompt[name])
            rounds = sum(r for _, r in per_prompt[name])
            res[name] = {"verify_tokens": verify, "rounds": rounds, "tau": toks / rounds,
                         "per_prompt": per_prompt[name]}
            if name != "chain":
                res[name]["x_chain"] = paired_tau_ratio(per_prompt[name], per_prompt["chain"])
        run.data.update(prompts=len(prompts), tokens=n_tokens, block=k,
                        max_new_tokens=args.max_new_tokens, drafter=args.drafter, systems=res)
        print(render(run.data))
    print(f"wrote {', '.join(str(x) for x in run.paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
