"""benchmarks/tree_tau_cpu.py: the simulated chain reproduces domino_generate's greedy rounds,
tree verification walks the deepest matching root path, and a short run reports every system
with provenance."""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import tree_tau_cpu as tt  # noqa: E402


def test_accept_rules():
    assert tt.chain_accept([5, 6, 7], [5, 6, 9]) == 2
    assert tt.chain_accept([1], []) == 0
    #        0(root)  1:a  2:b  3:c(child of 1)  4:d(child of 2)  5:e(child of 4)
    tokens, parents = [0, 10, 11, 12, 13, 14], [-1, 0, 0, 1, 2, 4]
    assert tt.tree_accept(tokens, parents, [11, 13, 14, 99]) == 3  # the second branch
    assert tt.tree_accept(tokens, parents, [10, 13]) == 1  # 13 is not under 10
    assert tt.tree_accept(tokens, parents, [99]) == 0
    chain = list(range(-1, 5))
    assert tt.tree_accept([0, 1, 2, 3, 4, 5], chain, [1, 2, 3, 7]) == \
        tt.chain_accept([1, 2, 3, 4, 5], [1, 2, 3, 7]) == 3


@pytest.mark.parametrize("prompt_index", [0, 3])
def test_simulated_chain_matches_domino_generate(prompt_index):
    from domino_sglang.cli.main import load_pair
    from domino_sglang.core.rollout import domino_rollout_ref
    from domino_sglang.hf.generate import domino_generate

    pair = ROOT / "assets/domino-tiny"
    target, drafter = load_pair(pair / "target", pair / "drafter-domino", "float32", "cpu")[:2]
    prompt = json.loads((pair / "heldout_prompts.jsonl").read_text().splitlines()
                        [prompt_index])["input_ids"]
    n = 40
    with torch.no_grad():
        ref = domino_generate(target, drafter, torch.tensor([prompt]), max_new_tokens=n)
    seq = tt.greedy_sequence(target, prompt, n, None)
    assert seq[len(prompt):] == ref.tokens[:n]
    cfg, head = drafter.config, drafter.head_weights()
    embed = target.get_input_embeddings().weight.float()
    lm = target.get_output_embeddings().weight.float()

    def chain(hidden, bonus, truth):
        roll = domino_rollout_ref(hidden, torch.tensor([bonus]), lm, embed, head,
                                  shift_label=cfg.shift_label,
                                  pure_prefix_len=cfg.pure_draft_prefix_len)
        return tt.chain_accept(roll.tokens[0].tolist(), truth)

    lens = tt.simulate(tt.RoundDrafter(target, drafter, seq), len(prompt), chain)
    # the last round may accept more in domino_generate (it verifies past the n-th token)
    assert lens[:-1] == ref.accept_lens[:-1] and lens[-1] <= ref.accept_lens[-1]
    assert len(lens) == len(ref.accept_lens)


def test_short_run(tmp_path):
    assert tt.main(["--num-prompts", "2", "--max-new-tokens", "24", "--trees", "2x16", "4x32",
                    "--best-first", "4x16", "--commit", "feedbee",
                    "--out-dir", str(tmp_path)]) == 0
    data = json.loads(next(tmp_path.glob("tree_tau_*.json")).read_text())
    s = data["systems"]
    assert set(s) == {"chain", "chain-headoff", "tree-2x16", "tree-4x32", "best-first-4x16"}
    assert s["best-first-4x16"]["verify_tokens"] == 16
    assert s["tree-2x16"]["verify_tokens"] == s["chain"]["verify_tokens"] == 16
    assert s["tree-4x32"]["verify_tokens"] == 32
    for r in s.values():
        assert r["tau"] == pytest.approx(sum(t for t, _ in r["per_prompt"]) /
                                         sum(n for _, n in r["per_prompt"]))
    assert s["tree-2x16"]["x_chain"]["n"] == 2 and "x_chain" not in s["chain"]
    assert data["meta"]["git"]["commit"] == "feedbee"
    with pytest.raises(SystemExit):
        tt.main(["--trees", "4"])
