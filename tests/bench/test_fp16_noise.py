"""benchmarks/fp16_noise_cpu.py: the chunked KV-cache forward gives the full forward's logits
(fp32, any chunk size), and a short fp16 run on the committed pair reports every comparison,
the named position and provenance."""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fp16_noise_cpu as fn  # noqa: E402


def test_chunked_forward_matches_the_full_forward_in_fp32():
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(ROOT / "assets/domino-tiny/target"),
                                             dtype=torch.float32).eval()
    seq = [json.loads(x)["input_ids"] for x in
           (ROOT / "assets/domino-tiny/heldout_prompts.jsonl").read_text().splitlines()][0]
    seq = seq[:40]
    n0 = 20
    with torch.no_grad():
        full = m(torch.tensor([seq[:-1]])).logits[0, n0 - 1:]
    for step in (1, 3, 16):
        got = fn._chunked(m, seq, n0, step)
        assert got.shape == full.shape
        assert torch.allclose(got, full, atol=1e-4), step


def test_at_parses_prompt_and_position():
    assert fn._at("5:31") == (5, 31)
    with pytest.raises(Exception, match="PROMPT:POSITION"):
        fn._at("5")


def test_short_run_on_the_committed_pair(tmp_path):
    assert fn.main(["--num-prompts", "3", "--max-new-tokens", "12", "--at", "1:2",
                    "--commit", "feedbee", "--out-dir", str(tmp_path)]) == 0
    data = json.loads(next(tmp_path.glob("fp16_noise_*.json")).read_text())
    assert data["prompts"] == 3 and data["positions"] == sum(
        b["positions"] for b in data["flips_by_gap"])
    assert set(data["gap_error_ulps"]) == {"prefill vs fp32", "decode vs fp32",
                                           "verify vs fp32", "decode vs verify"}
    (a,) = data["at"]
    assert (a["prompt"], a["position"]) == (1, 2) and 0 <= a["share_decode_vs_verify_ge_gap"] <= 1
    assert data["meta"]["git"]["commit"] == "feedbee"


def test_a_position_past_the_generated_tokens_is_reported_missing(tmp_path):
    assert fn.main(["--num-prompts", "1", "--max-new-tokens", "4", "--at", "0:9",
                    "--out-dir", str(tmp_path)]) == 0
    data = json.loads(next(tmp_path.glob("fp16_noise_*.json")).read_text())
    (a,) = data["at"]
    assert a["position"] == 9 and "has 4 tokens" in a["missing"]
