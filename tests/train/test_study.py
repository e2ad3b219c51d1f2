"""The drafter recipe study (``python -m domino_sglang.train.study``): each variant changes
what its line says and nothing else, and the stages regen -> train -> eval -> report run end to
end on a CPU with the smoke sizes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from domino_sglang.train.study import (DEFAULT_SET, FINALS, GROUPS, VARIANTS, greedy_view,
                                       pick_recipe, render, variant_config)

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "assets" / "domino-tiny" / "target"
HELDOUT = ROOT / "assets" / "domino-tiny" / "heldout_prompts.jsonl"


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for k in set(a) | set(b):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out |= _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.add(prefix + k)
    return out


def _leaves(over: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in over.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_changes_only_what_it_says(name, tmp_path):
    base = variant_config("base", TARGET, tmp_path, 100.0)
    cfg = variant_config(name, TARGET, tmp_path, 100.0)
    _, over, data = VARIANTS[name]
    over = dict(over)
    frac = over.pop("time_frac", None)
    if frac is not None:
        assert cfg["time_limit_s"] == pytest.approx(100.0 * frac)
        over["time_limit_s"] = cfg["time_limit_s"]
    expected = _leaves(over) | ({"out_dir"} if name != "base" else set())
    if data != "half":
        expected.add("data")
    assert _diff(base, cfg) == expected
    for leaf in _leaves(over):
        node, want = cfg, over
        for part in leaf.split("."):
            node, want = node[part], want[part]
        assert node == want, leaf
    assert cfg["out_dir"] == str(tmp_path / name)
    assert cfg["data"] == str(tmp_path / {"all": "regen", "half": "regen_half",
                                          "t0": "regen_t0", "mt": "regen_mtmix"}[data])


def test_the_default_set_has_the_comparisons_the_issue_needs():
    # Domino vs head-off DFlash and the curriculum ablation are always measured
    assert {"base", "dflash", "nocurriculum"} <= set(DEFAULT_SET) <= set(VARIANTS)


def _fake_eval(out: Path, taus: dict[str, tuple[float, float]], backend: str = "eval") -> None:
    (out / backend).mkdir(parents=True, exist_ok=True)
    for name, (t0, t1) in taus.items():
        for temp, tau in (("0", t0), ("1", t1)):
            (out / backend / f"{name}_T{temp}.json").write_text(json.dumps({"tau": tau}))


def test_pick_recipe_adopts_the_best_variant_of_each_group(tmp_path):
    _fake_eval(tmp_path, {
        "base": (2.0, 1.5),
        "lr6e-4": (2.1, 1.5),       # better (mean ratio 1.025) but lr2e-3 is better still
        "lr2e-3": (2.2, 1.53),      # adopted for the lr group
        "anchors48": (2.2, 1.4),    # mean 1.017 but T=1 falls 6.7 %: not adopted
        "curriculum1.0": (2.01, 1.505),  # +0.5 %: inside the 1 % margin
        "data2x": (2.05, 1.55),     # adopted: data "all"
        "dflash": (3.0, 3.0),       # an ablation: never adopted
        "base-third": (3.0, 3.0),   # a training-length check: never adopted
    })
    names = ["base", "dflash", "lr6e-4", "lr2e-3", "anchors48", "curriculum1.0", "data2x",
             "base-third", "gamma10"]
    r = pick_recipe(names, tmp_path, [0.0, 1.0], margin=0.01)
    assert r["adopted"] == ["lr2e-3", "data2x"]
    assert r["overrides"] == {"optim": {"lr": 2e-3}} and r["data"] == "all"
    v = {n: c["verdict"] for n, c in r["candidates"].items()}
    assert v == {"lr6e-4": "better than base", "lr2e-3": "adopted",
                 "anchors48": "not better than base", "curriculum1.0": "not better than base",
                 "data2x": "adopted", "gamma10": "not evaluated"}
    assert r["candidates"]["lr2e-3"]["tau_ratio_vs_base"] == pytest.approx(
        {"HF T=0": 1.1, "HF T=1": 1.02})
    assert set(r["candidates"]) <= set(GROUPS)
    # nothing better than base: the recipe's own settings
    r = pick_recipe(["base", "curriculum1.0"], tmp_path, [0.0, 1.0], margin=0.01)
    assert r["adopted"] == [] and r["overrides"] == {} and r["data"] == "half"


def test_pick_recipe_weighs_the_sglang_tau_where_it_was_measured(tmp_path):
    """HF alone: curriculum1.0 is +0.5 % (inside the margin); with the SGLang servers' tau of
    the same drafters (+3 % at both temperatures) the mean over the four is +1.75 %: adopted.
    lr2e-3 loses 5 % on SGLang at T=1: out, although HF says +10 %."""
    _fake_eval(tmp_path, {"base": (2.0, 1.5), "curriculum1.0": (2.01, 1.5075),
                          "lr2e-3": (2.2, 1.65)})
    names = ["base", "curriculum1.0", "lr2e-3"]
    r = pick_recipe(names, tmp_path, [0.0, 1.0], margin=0.01)
    assert r["adopted"] == ["lr2e-3"]
    _fake_eval(tmp_path, {"base": (2.0, 1.2), "curriculum1.0": (2.06, 1.236),
                          "lr2e-3": (2.2, 1.14)}, backend="sglang")
    r = pick_recipe(names, tmp_path, [0.0, 1.0], margin=0.01)
    assert r["adopted"] == ["curriculum1.0"]
    c = r["candidates"]["curriculum1.0"]
    assert c["mean_ratio"] == pytest.approx((1.005 + 1.005 + 1.03 + 1.03) / 4)
    assert set(c["tau_ratio_vs_base"]) == {"HF T=0", "HF T=1", "SGLang T=0", "SGLang T=1"}
    assert r["candidates"]["lr2e-3"]["verdict"] == "not better than base"
    assert r["base_tau"]["SGLang T=1"] == 1.2


def test_pick_recipe_needs_base_evaluated(tmp_path):
    _fake_eval(tmp_path, {"lr2e-3": (2.2, 1.5)})
    with pytest.raises(RuntimeError, match="no eval result for base T=0"):
        pick_recipe(["base", "lr2e-3"], tmp_path, [0.0, 1.0], margin=0.01)


def test_final_drafters_apply_the_recipe_then_their_own_change(tmp_path):
    recipe = {"overrides": {"optim": {"lr": 2e-3}, "loss": {"anchors_per_seq": 48}},
              "data": "all"}
    base = variant_config("base", TARGET, tmp_path, 100.0)
    common = {"optim.lr", "loss.anchors_per_seq", "data", "out_dir"}
    want = {"final-domino": common, "final-dflash": common | {"drafter.head"},
            "final-nocurriculum": common | {"loss.curriculum"}}
    for name in FINALS:
        cfg = variant_config(name, TARGET, tmp_path, 100.0, recipe=recipe)
        assert _diff(base, cfg) == want[name], name
        assert cfg["optim"]["lr"] == 2e-3 and cfg["data"] == str(tmp_path / "regen")
    assert variant_config("final-dflash", TARGET, tmp_path, 100.0,
                          recipe=recipe)["drafter"]["head"] is False
    with pytest.raises(ValueError, match="needs the picked recipe"):
        variant_config("final-domino", TARGET, tmp_path, 100.0)


def test_smoke_study_end_to_end(tmp_path):
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()[:24]]
    prompts = tmp_path / "prompts.jsonl.gz"
    with gzip.open(prompts, "wt") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "input_ids": r["input_ids"]}) + "\n")
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "domino_sglang.train.study", "--smoke", "--prompts",
           str(prompts), "--out", str(out), "--variants", "base,dflash,lr2e-3", "--stages",
           "regen,train,eval,final,report", "--num-prompts", "1", "--max-new-tokens", "8",
           "--time-limit-s", "300", "--jobs", "2", "--commit", "abc1234"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "regen_info.json").read_text())
    # smoke regen: shards of 32 prompts (16 per temperature); base trains on the first half
    assert info["prompts"] == 24 and info["shards"] == 1 and info["half_shards"] == 1
    trained = json.loads((out / "train_info.json").read_text())
    assert info["commit"] == trained["commit"] == "abc1234" and "torch" in trained["versions"]
    assert json.loads((out / "dflash" / "domino_train.json").read_text())["drafter"]["head"] \
        is False
    assert json.loads((out / "base" / "domino_train.json").read_text())["data"] \
        == str(out / "regen_half")
    data = json.loads((out / "study.json").read_text())
    assert data["git"]["commit"] == "abc1234" and "command" in data
    by = {r["name"]: r for r in data["rows"]}
    assert set(by) == {"base", "dflash", "lr2e-3", *FINALS}
    recipe = json.loads((out / "final_recipe.json").read_text())
    assert data["final_recipe"] == recipe and recipe["adopted"] in ([], ["lr2e-3"])
    base_lr = json.loads((out / "base" / "domino_train.json").read_text())["optim"]["lr"]
    lr = 2e-3 if recipe["adopted"] else base_lr
    for n in FINALS:
        cfg = json.loads((out / n / "domino_train.json").read_text())
        assert cfg["optim"]["lr"] == lr and cfg["drafter"]["head"] is (n != "final-dflash")
        assert cfg["loss"]["curriculum"] is (n != "final-nocurriculum")
    assert data["final_info"]["commit"] == "abc1234"
    for r in by.values():
        assert r["steps"] == 20  # the smoke preset's step count, reached before the budget
        for t in ("0", "1"):
            cell = r[f"eval_T{t}"]
            assert cell["prompts"] == 1 and cell["tau"] >= 1.0
            assert cell["new_tokens"] <= 8
            assert cell["commit"] == "abc1234" and "torch" in cell["versions"]
            (toks, rounds), = cell["per_prompt_tokens_rounds"]
            assert toks == cell["new_tokens"] and rounds == cell["rounds"]
        assert r["sglang_T0"] is None
    md = (out / "study.md").read_text()
    assert md == render(data) and "| dflash | no Domino head" in md
    # every other drafter's tau over base's, with its paired interval over the prompts
    ratios = data["ratios_vs_base"]
    assert set(ratios) == set(by) - {"base"}
    for name, cells in ratios.items():
        assert set(cells) == {"HF T=0", "HF T=1"}
        for key, cell in cells.items():
            (bt, br), = by["base"][f"eval_T{key[-1]}"]["per_prompt_tokens_rounds"]
            (mt, mr), = by[name][f"eval_T{key[-1]}"]["per_prompt_tokens_rounds"]
            assert cell["ratio"] == pytest.approx((mt / mr) / (bt / br))
            assert cell["lo"] == pytest.approx(cell["ratio"]) == cell["hi"]  # one prompt
    assert "paired bootstrap 95 % interval" in md and "| final-domino | " in md


def test_sglang_stage_measures_tau_per_drafter_and_temperature(tmp_path):
    """The sglang stage against stand-in servers (tests/bench/fake_sglang_server.py: Domino
    answers with ceil(tokens / 3) verify rounds): one server per drafter, every prompt at every
    temperature, tau = completion tokens / verify rounds, the whole block every round."""
    fake = ROOT / "tests" / "bench" / "fake_sglang_server.py"
    out = tmp_path / "study"
    logs = tmp_path / "logs"
    logs.mkdir()
    drafter = ROOT / "assets" / "domino-tiny" / "drafter-domino"
    cmd = [sys.executable, "-m", "domino_sglang.train.study", "--stages", "sglang,report",
           "--out", str(out), "--variants", "base", "--reference", f"a={drafter}",
           "--reference", f"b={drafter}", "--num-prompts", "5", "--max-new-tokens", "30",
           "--concurrency", "2", "--launcher", f"{sys.executable} {fake}",
           "--server-env", f"FAKE_LOG_DIR={logs}",  # reaches the servers only this way
           "--base-port", "31450"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prompts = [json.loads(line)["input_ids"] for line in HELDOUT.read_text().splitlines()[:5]]
    # the fake's answer lengths: eos after 20 + sum(ids) % 5 tokens, else max_new_tokens
    lens = [min(30, 21 + sum(p) % 5) for p in prompts]
    want = sum(lens) / sum(-(-n // 3) for n in lens)
    data = json.loads((out / "study.json").read_text())
    by = {r["name"]: r for r in data["rows"]}
    assert set(by) == {"base", "a", "b"}  # base has no drafter: listed, not measured
    assert by["base"]["sglang_T0"] is None
    for name in ("a", "b"):
        for t in ("0", "1"):
            cell = by[name][f"sglang_T{t}"]
            assert cell["ok"] == cell["requests"] == 5 and not cell["errors"]
            assert cell["tau"] == pytest.approx(want)
            # per prompt, in prompt order: [completion tokens, verify rounds]
            assert cell["per_prompt_tokens_rounds"] == [[n, -(-n // 3)] for n in lens]
            assert cell["server_env"] == {"FAKE_LOG_DIR": str(logs)}
            assert "torch" in cell["versions"] and cell["command"] and cell["date"]
    assert {json.loads((out / "sglang" / f"{n}_T0.json").read_text())["port"]
            for n in ("a", "b")} == {31450, 31451}
    sent = [json.loads(line) for line in (logs / "domino_fixed.jsonl").read_text().splitlines()]
    assert len(sent) == 2 * 2 * 5  # 2 servers x 2 temperatures x 5 prompts
    assert sorted({s["sampling_params"]["temperature"] for s in sent}) == [0.0, 1.0]


def test_regen_time_limit_keeps_whole_shards_and_splits_what_is_done(tmp_path, monkeypatch):
    """--regen-time-limit-s stops between shards (a clock that advances 100 s per reading and a
    150-s limit let exactly one of the two shards run); the half / all split uses what is done."""
    from types import SimpleNamespace

    from domino_sglang.train import data as data_mod
    from domino_sglang.train.study import stage_regen

    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()[:64]]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"input_ids": r["input_ids"]}) + "\n" for r in rows))

    def fake_clock(step):  # only data.py's clock (the regeneration loop) is replaced
        ticks = iter(range(100, 10**6, step))
        monkeypatch.setattr(data_mod, "time", SimpleNamespace(monotonic=lambda: next(ticks)))

    fake_clock(100)
    info = stage_regen(TARGET, prompts, tmp_path / "s", smoke=True, seed=0, quiet=True,
                       time_limit_s=150.0)
    assert info["prompts"] == 32 and info["shards"] == 1 and info["half_shards"] == 1
    assert sorted(p.name for p in (tmp_path / "s" / "regen_half").iterdir()) == ["part-00000.npz"]
    fake_clock(1000)
    with pytest.raises(RuntimeError, match="no shard"):
        stage_regen(TARGET, prompts, tmp_path / "s2", smoke=True, seed=0, quiet=True,
                    time_limit_s=150.0)


def test_greedy_view_keeps_exactly_the_greedy_answers(tmp_path):
    """dataT0 trains on OUT/regen_t0: every shard cut to the rows answered at T=0 (prompt j at
    temperatures[j % n], the shard's first prompt at part index x shard size), masks kept."""
    from domino_sglang.train.data import TokenDataset, load_dataset, write_meta

    regen = tmp_path / "regen"
    regen.mkdir()
    temps, batch = [1.0, 0.0, 0.7], 2  # greedy is index 1 here, shards of 6 prompts
    shard = batch * len(temps)
    rows = list(range(15))  # prompt j's sequence encodes j; the last shard is partial
    for si, lo in enumerate(range(0, len(rows), shard)):
        js = rows[lo: lo + shard]
        TokenDataset.from_sequences([[j, 1000 + j, 2000 + j] for j in js],
                                    [[0, 1, j % 2] for j in js]).save_part(
            regen / f"part-{si:05d}.npz")
    write_meta(regen, kind="regen", prompts=len(rows),
               config={"temperatures": temps, "batch_size": batch})
    out = greedy_view(tmp_path)
    assert out == tmp_path / "regen_t0"
    ds = load_dataset(out)
    got = [ds.get(i) for i in range(len(ds))]
    want = [j for j in rows if j % 3 == 1]
    assert [int(t[0]) for t, _ in got] == want
    assert [list(map(int, m)) for _, m in got] == [[0, 1, j % 2] for j in want]
    assert json.loads((out / "meta.json").read_text())["temperature"] == 0.0
    # no greedy temperature: a clear error instead of an empty dataset
    sampled = tmp_path / "sampled"
    (sampled / "regen").mkdir(parents=True)
    write_meta(sampled / "regen", kind="regen", prompts=1,
               config={"temperatures": [1.0], "batch_size": batch})
    with pytest.raises(ValueError, match="no greedy"):
        greedy_view(sampled)


def test_multiturn_view_swaps_single_turn_answers_for_multi_turn_ones(tmp_path):
    """The variant multiturn trains on as many sequences as base: every multi-turn answer, then
    base's first single-turn ones; a missing OUT/regen_mt names the flag that makes it."""
    from domino_sglang.train.data import TokenDataset, load_dataset
    from domino_sglang.train.study import multiturn_view

    with pytest.raises(FileNotFoundError, match="--multiturn-prompts"):
        multiturn_view(tmp_path)
    for name, ids in (("regen_half", range(10)), ("regen_mt", range(100, 104))):
        (tmp_path / name).mkdir()
        TokenDataset.from_sequences([[i, i] for i in ids], [[0, 1] for _ in ids]).save_part(
            tmp_path / name / "part-00000.npz")
    ds = load_dataset(multiturn_view(tmp_path))
    assert [int(ds.get(i)[0][0]) for i in range(len(ds))] == [100, 101, 102, 103, 0, 1, 2, 3, 4, 5]


def test_multiturn_prompts_carry_their_context_and_fit(tmp_path):
    """Each prompt is the conversation up to a later user turn, oldest turns dropped to fit,
    with an assistant turn before the last user turn; first turns alone are never used."""
    from transformers import AutoTokenizer

    from domino_sglang.train.data import render_chat
    from domino_sglang.train.recipe import multiturn_prompts

    tok = AutoTokenizer.from_pretrained(str(TARGET))
    long = "word " * 200
    convs = [("a", [{"role": "user", "content": "first question here, please"},
                    {"role": "assistant", "content": "first answer from the model"},
                    {"role": "user", "content": "second question, a follow-up"}]),
             ("b", [{"role": "user", "content": long},
                    {"role": "assistant", "content": "short answer to it, fine"},
                    {"role": "user", "content": "and now the follow-up question"}]),
             ("c", [{"role": "user", "content": "only one turn in this conversation"}])]
    path = tmp_path / "mt.jsonl"
    assert multiturn_prompts(convs, tok, 10, 64, path) == 2
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a/2", "b/2"]
    assert rows[0]["input_ids"] == tok.encode(render_chat(convs[0][1], add_generation_prompt=True),
                                              add_special_tokens=False)
    assert rows[0]["turns"] == 3 and rows[1]["turns"] == 2  # b's long first turn dropped
    assert all(len(r["input_ids"]) <= 64 for r in rows)


def test_multiturn_prompts_exact_when_token_counts_do_not_add_up(tmp_path):
    """A tokenizer that merges text across message boundaries: the per-message shortcut would
    misjudge what fits, so the exact search decides (each prompt the longest context that
    fits, as a from-scratch search over starting turns gives)."""
    from domino_sglang.train.data import render_chat
    from domino_sglang.train.recipe import multiturn_prompts

    class MergingTok:  # one id per character, "<|im_end|>\n<|im_start|>" as a single id
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text.replace("<|im_end|>\n<|im_start|>", "\x01")]

    tok = MergingTok()
    m = [{"role": r, "content": f"{r} message number {j} " + "x" * (10 * j)}
         for j, r in enumerate(["user", "assistant"] * 3)]
    path = tmp_path / "mt.jsonl"
    limit_tokens = 200
    n = multiturn_prompts([("c", m)], tok, 10, limit_tokens, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert n == len(rows) >= 1
    for r in rows:
        i = int(r["id"].split("/")[1])
        fits = [s for s in range(i) if len(tok.encode(render_chat(m[s:i + 1], True)))
                <= limit_tokens and any(t["role"] == "assistant" for t in m[s:i])]
        assert fits and r["turns"] == i + 1 - min(fits)
        assert r["input_ids"] == tok.encode(render_chat(m[min(fits):i + 1], True))


def test_recipe_of_merges_changes_and_combines_all_with_multi_turn(tmp_path):
    """--final-adopt: the changes of variants measured in different studies, merged; twice the
    data with multi-turn answers trains on every single- and multi-turn answer (allmt_view:
    links to both, multi-turn shards after the single-turn ones); one variant per group; data
    that cannot be combined (greedy-only with twice the data) is refused."""
    from domino_sglang.train.data import TokenDataset, load_dataset
    from domino_sglang.train.study import allmt_view, recipe_of

    r = recipe_of(["data2x", "gamma4", "batch64", "lrconst", "multiturn"])
    assert r["data"] == "all+mt" and r["adopted"][0] == "data2x"
    assert r["overrides"] == {"loss": {"gamma": 4.0},
                              "optim": {"batch_size": 64, "min_lr_ratio": 1.0}}
    assert recipe_of([])["data"] == "half" and recipe_of(["multiturn"])["data"] == "mt"
    with pytest.raises(ValueError, match="alternatives of one group"):
        recipe_of(["gamma4", "gamma10"])
    with pytest.raises(ValueError, match="cannot be combined"):
        recipe_of(["data2x", "dataT0"])
    with pytest.raises(ValueError, match="not an alternative"):
        recipe_of(["dflash"])
    cfg = variant_config("final-domino", TARGET, tmp_path, 100.0, recipe=r)
    assert cfg["data"] == str(tmp_path / "regen_allmt") and cfg["loss"]["gamma"] == 4.0

    with pytest.raises(FileNotFoundError, match="regen"):
        allmt_view(tmp_path)
    for name, parts in (("regen", [range(0, 3), range(3, 6)]), ("regen_mt", [range(100, 102)])):
        (tmp_path / name).mkdir()
        for k, ids in enumerate(parts):
            TokenDataset.from_sequences([[i, i] for i in ids], [[0, 1] for _ in ids]).save_part(
                tmp_path / name / f"part-{k:05d}.npz")
    ds = load_dataset(allmt_view(tmp_path))
    assert [int(ds.get(i)[0][0]) for i in range(len(ds))] == [0, 1, 2, 3, 4, 5, 100, 101]
    assert allmt_view(tmp_path) == tmp_path / "regen_allmt"  # built once, reused


def test_final_adopt_is_checked_before_anything_runs(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "domino_sglang.train.study", "--stages",
                           "final", "--out", str(out), "--final-adopt", "gamma4,lr9"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--final-adopt=gamma4,lr9" in proc.stderr
    assert "not an alternative" in proc.stderr and not out.exists()
