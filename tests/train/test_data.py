"""Data pipeline: truncated ShareGPT parsing, the tokenizer's chat template, token datasets and
resumable regeneration."""

import json

import numpy as np
import torch

from domino_sglang.hf.tiny import build_tiny_target
from domino_sglang.train.data import (CHAT_TEMPLATE, TokenDataset, iter_jsonl_prompts,
                                      iter_sharegpt, load_dataset, regenerate_hf, render_chat,
                                      train_tokenizer)


def test_iter_sharegpt_stops_at_truncation():
    items = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}]}
             for i in range(3)]
    text = json.dumps(items, indent=1)
    cut = text[: text.rindex('"q2"') + 2]  # truncated inside the third item
    got = list(iter_sharegpt(cut))
    assert [g["id"] for g in got] == ["0", "1"]
    assert [g["id"] for g in iter_sharegpt(text)] == ["0", "1", "2"]


def test_tokenizer_template_and_special_tokens(tmp_path):
    texts = [render_chat([{"role": "user", "content": f"hello number {i} world"},
                          {"role": "assistant", "content": "fine thanks " * (i % 5)}])
             for i in range(200)]
    tok = train_tokenizer(texts, 300, tmp_path / "tok")
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<|endoftext|>", "<|im_start|>",
                                                       "<|im_end|>", "<|mask|>"]
    assert tok.mask_token_id == 3 and tok.eos_token_id == 2 and tok.pad_token_id == 0
    msgs = [{"role": "user", "content": "hello world"}]
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert loaded.chat_template == CHAT_TEMPLATE
    assert loaded.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == \
        render_chat(msgs, add_generation_prompt=True)
    ids = loaded.encode(render_chat(msgs), add_special_tokens=False)
    assert ids[0] == 1 and 2 in ids and loaded.decode(ids) == render_chat(msgs)


def test_dataset_roundtrip_and_jsonl(tmp_path):
    a = TokenDataset.from_sequences([[5, 6, 7], [8]], [[0, 1, 1], [1]])
    b = TokenDataset.from_sequences([[9, 10]], [[1, 0]])
    a.save_part(tmp_path / "part-00000.npz")
    b.save_part(tmp_path / "part-00001.npz")
    d = load_dataset(tmp_path)
    assert len(d) == 3 and d.num_tokens == 6
    assert d.get(2)[0].tolist() == [9, 10] and d.get(0)[1].tolist() == [0, 1, 1]
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n{"messages": [{"role": "user", '
                                      '"content": "yo"}], "id": "x"}\n')
    rows = list(iter_jsonl_prompts(tmp_path / "p.jsonl"))
    assert rows[0]["messages"][0]["content"] == "hi" and rows[1]["id"] == "x"


def test_regenerate_resumes(tmp_path):
    torch.set_num_threads(1)
    target = build_tiny_target(seed=0, scale=4.0)
    prompts = [np.random.default_rng(i).integers(4, 100, size=3 + i % 4).tolist()
               for i in range(10)]
    kw = dict(max_new_tokens=5, temperatures=[0.0, 1.0], pad_id=0, eos_ids=[1], batch_size=4,
              shard_size=4, quiet=True)
    assert regenerate_hf(target, prompts[:8], tmp_path, **kw) == 8
    before = (tmp_path / "part-00000.npz").stat().st_mtime_ns
    assert regenerate_hf(target, prompts, tmp_path, **kw) == 10  # only the last shard is new
    assert (tmp_path / "part-00000.npz").stat().st_mtime_ns == before
    d = load_dataset(tmp_path)
    assert len(d) == 10
    for j in range(10):
        ids, mask = d.get(j)
        n = len(prompts[j])
        assert ids[:n].tolist() == prompts[j] and not mask[:n].any()
        assert 1 <= mask[n:].sum() <= 5 and mask[n:].all()
    # greedy rows (even j) equal the target's own argmax continuation
    ids, _ = d.get(0)
    x = torch.tensor([prompts[0]])
    with torch.no_grad():
        for t in ids[len(prompts[0]):].tolist():
            nxt = int(target(x).logits[0, -1].argmax())
            assert nxt == t
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
