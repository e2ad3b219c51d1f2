"""The demo CLI end to end, its greedy/sampling verdict lines, the default-pair lookup, and
help texts that are true (one default per flag, no markup) for every tool."""

import argparse
import importlib.util
import json
import re
from pathlib import Path

import pytest

from domino_sglang.cli import main as main_mod
from domino_sglang.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_generate_demo_runs(tmp_path, capsys, monkeypatch):
    """The default job: the trained pair inflated to the cpu-demo shape (built into the cache
    folder), bf16; greedy output identical to plain decoding, or a reported bf16 near-tie."""
    monkeypatch.setenv("DOMINO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    rc = main(["generate", "--max-new-tokens", "12", "--prompt", "hello", "--json", str(out),
               "--device", "cpu", "--repeats", "2", "--quiet"])
    assert rc == 0
    assert (tmp_path / "cache" / "pair-cpu-demo-bf16" / "target" / "config.json").is_file()
    printed = capsys.readouterr().out
    assert "domino" in printed and "plain decoding" in printed
    assert ("greedy check: domino output is identical to plain decoding (12 tokens)" in printed
            or "a rounding near-tie between the 1-token and the many-token forward" in printed)
    assert "median of 2 runs" in printed and "0.42B-parameter Qwen3 shape" in printed
    data = json.loads(out.read_text())
    assert data["pair"] == "cpu-demo" and data["dtype"] == "bfloat16"
    assert data["provenance"]["versions"]["torch"]
    res = data["results"][0]
    assert res["domino"]["tokens"] == res["plain decoding"]["tokens"] == 12
    assert len(res["domino"]["times_s"]) == 2 and res["domino"]["tau"] >= 1.0
    if res["speedup"] < 1:  # the output says why, from the measured times
        assert "Why Domino is slower here" in printed


def test_sampling_says_outputs_are_not_compared(capsys):
    rc = main(["generate", "--random-pair", "--max-new-tokens", "6", "--prompt", "hi",
               "--temperature", "0.7", "--repeats", "1", "--device", "cpu", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "samples are not compared token by token" in printed
    assert "greedy check" not in printed


def test_demo_pair_loads_without_dtype_warning(caplog):
    """Both models load in --dtype, so the on-disk dtypes (bf16 drafter) do not warn."""
    args = build_parser().parse_args(["generate"])
    caplog.set_level("WARNING")
    main_mod.validate(args)
    target, drafter = main_mod.load_pair(args.target, args.draft, "float32", "cpu")
    assert next(target.parameters()).dtype == next(drafter.parameters()).dtype
    assert not [r for r in caplog.records if "dtype" in r.getMessage()]


def test_demo_pair_is_rebuilt_when_any_source_changes(tmp_path, monkeypatch):
    """The cached inflated demo pair is reused while its sources are unchanged, and rebuilt
    when the target, the Domino drafter or the head-off drafter (which it also inflates)
    changes."""
    import os

    import domino_sglang.bench.inflate as inflate_mod

    src = tmp_path / "pair"
    files = {}
    for name in ("target", "drafter-domino", "drafter-dflash"):
        (src / name).mkdir(parents=True)
        files[name] = src / name / "model.safetensors"
        files[name].write_bytes(b"x" * 8)
        os.utime(files[name], (1_000_000, 1_000_000))
    builds = []

    def fake_inflate(src_dir, out, shape, **kw):
        builds.append(shape)
        out.mkdir(parents=True, exist_ok=True)
        (out / "inflate.json").write_text("{}")

    monkeypatch.setattr(inflate_mod, "inflate_pair", fake_inflate)
    monkeypatch.setenv("DOMINO_CACHE_DIR", str(tmp_path / "cache"))
    args = (src / "target", src / "drafter-domino", True)
    main_mod.demo_pair(*args)
    main_mod.demo_pair(*args)
    assert len(builds) == 1  # cached
    files["drafter-dflash"].write_bytes(b"y" * 9)  # a new head-off drafter
    os.utime(files["drafter-dflash"], (999_999, 999_999))  # even with an older mtime
    main_mod.demo_pair(*args)
    assert len(builds) == 2
    os.utime(files["target"], (2_000_000, 2_000_000))
    main_mod.demo_pair(*args)
    main_mod.demo_pair(*args)
    assert len(builds) == 3


def test_missing_default_pair_is_an_error(tmp_path, monkeypatch, capsys):
    """A non-editable install run outside the clone: a clear error, no random model."""
    monkeypatch.setattr(main_mod, "default_pair_roots", lambda: [tmp_path])
    assert main(["generate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "default pair was not found" in err[0]
    assert str(tmp_path / "assets/domino-tiny/target") in err[0] and "--random-pair" in err[0]


def test_old_flag_spelling_is_accepted_with_a_warning(capsys):
    from domino_sglang.cli.train import main as train_main

    assert train_main(["--target", "t", "--data", "d", "--out_dir", "o",
                       "--optim.batch_size", "3", "--print-config"]) == 0
    cap = capsys.readouterr()
    shown = json.loads(cap.out)
    assert shown["out_dir"] == "o" and shown["optim"]["batch_size"] == 3
    assert "--out_dir is an old spelling of --out-dir" in cap.err


def _serve():
    spec = importlib.util.spec_from_file_location("domino_serve", ROOT / "launch/serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_serve_uses_the_current_cuda_graph_flag(capsys):
    serve = _serve()
    draft = str(ROOT / "assets/domino-tiny/drafter-domino")
    assert serve.main(["--model", "m", "--draft", draft, "--print-command",
                       "--cuda-graph-bs", "1", "2"]) == 0
    cap = capsys.readouterr()
    cmd = cap.out.split()
    assert "--cuda-graph-bs" not in cmd
    assert cmd[cmd.index("--cuda-graph-bs-decode") + 1: cmd.index("--cuda-graph-bs-decode") + 3] \
        == ["1", "2"]
    assert "old spelling" in cap.err


def test_recipe_never_targets_the_shipped_assets_by_default():
    from domino_sglang.train import recipe

    args = recipe.build_parser().parse_args([])
    assert not recipe.is_shipped(Path(args.assets))
    assert recipe.is_shipped(ROOT / "assets" / "domino-tiny")


def _parsers():
    from domino_sglang.bench.load import build_parser as load_parser
    from domino_sglang.cli.eval import build_parser as eval_parser
    from domino_sglang.cli.train import build_parser as train_parser
    from domino_sglang.train.recipe import build_parser as recipe_parser

    gen = build_parser()._subparsers._group_actions[0].choices["generate"]
    return {"generate": gen, "domino-train": train_parser(), "domino-eval": eval_parser(),
            "domino-load": load_parser(), "recipe": recipe_parser(),
            "serve": _serve().build_parser()}


@pytest.mark.parametrize("name", ["generate", "domino-train", "domino-eval", "domino-load",
                                  "recipe", "serve"])
def test_help_is_true_and_plain(name):
    parser = _parsers()[name]
    text = parser.format_help()
    assert "``" not in text and "::" not in text and ":class:" not in text, name
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[-1]
        help_text = action.help or ""
        assert help_text.count("default:") <= 1, (flag, help_text)
        assert "default" in help_text or "required" in help_text, (flag, help_text)
        assert "_" not in flag.lstrip("-"), f"{flag}: flags use dashes"


def test_help_documents_flags():
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    text = sub.format_help()
    for flag in ("--target", "--draft", "--prompt", "--max-new-tokens", "--temperature",
                 "--repeats", "--quiet", "--debug", "--random-pair"):
        assert flag in text
    assert re.search(r"--repeats N\s+timed runs per method", text)


def test_near_tie_judges_the_gap_in_rounding_steps():
    """near_tie: the first differing token, the target's logits there, the gap in ulps."""
    import torch

    from domino_sglang.cli.main import near_tie

    class Fixed(torch.nn.Module):  # next-token logits independent of the context
        def __init__(self, logits):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(logits))

        def forward(self, ids):
            return type("O", (), {"logits": self.w.expand(1, ids.shape[1], -1)})

    tied = Fixed([8.0, 8.0 + 2 ** -4, 1.0])  # one bf16 step apart at 8
    r = near_tie(tied, [5], [3, 0], [3, 1], "bfloat16")
    assert r["position"] == 1 and r["near_tie"] and abs(r["gap_ulps"] - 1.0) < 1e-6
    assert not near_tie(Fixed([8.0, 1.0, 0.0]), [5], [0], [1], "bfloat16")["near_tie"]
    assert not near_tie(tied, [5], [0], [1], "float32")["near_tie"]  # fp32: never excused
    assert not near_tie(tied, [5], [0, 1], [0], "bfloat16")["near_tie"]  # a length difference
