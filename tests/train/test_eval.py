"""domino-eval on a saved mini target + drafter: the results file holds tau in [1, K] per
temperature, and the rounds are consistent with the tokens generated."""

import json

import torch

from domino_sglang.cli.eval import main as eval_main
from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target
from domino_sglang.train.data import render_chat, train_tokenizer


def test_eval_cli_writes_tau(tmp_path):
    torch.set_num_threads(1)
    texts = [render_chat([{"role": "user", "content": f"say {i} things"}]) for i in range(50)]
    tok = train_tokenizer(texts, 280, tmp_path / "target")
    target = build_tiny_target(seed=0, vocab_size=288, scale=4.0, eos_token_id=tok.eos_token_id)
    target.save_pretrained(str(tmp_path / "target"))
    drafter = build_tiny_drafter(target, seed=1, block_size=4, mask_token_id=tok.mask_token_id)
    drafter.save_pretrained(tmp_path / "drafter")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"input_ids": tok.encode(t)}) + "\n" for t in texts[:3]))
    out = tmp_path / "tau.json"
    rc = eval_main(["--target", str(tmp_path / "target"), "--drafter", f"d={tmp_path / 'drafter'}",
                    "--prompts", str(prompts), "--num-prompts", "3", "--max-new-tokens", "8",
                    "--temperatures", "0,1", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    saved = json.loads(out.read_text())
    prov = saved["provenance"]  # date, command, the commit and its dirty state, versions
    assert prov["date"] and "--temperatures 0,1" in prov["command"]
    assert "dirty" in prov["git"] and prov["versions"]["torch"]
    res = saved["results"]["d"]
    for t in ("T=0", "T=1"):
        assert 1.0 <= res[t]["tau"] <= 4.0 and res[t]["prompts"] == 3
        assert res[t]["new_tokens"] <= 24 and res[t]["rounds"] >= res[t]["new_tokens"] / 4
