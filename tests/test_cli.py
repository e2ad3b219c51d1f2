"""The demo CLI runs end to end on the embedded default and reports a lossless result."""

import json

from domino_sglang.cli.main import build_parser, main


def test_generate_demo_runs(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["generate", "--max-new-tokens", "12", "--prompt", "hello", "--json", str(out),
               "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "domino" in printed and "plain decoding" in printed
    res = json.loads(out.read_text())["results"][0]
    assert res["domino"]["tokens"] == res["plain decoding"]["tokens"]
    assert res["domino"]["tau"] >= 1.0


def test_help_documents_flags():
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    text = sub.format_help()
    for flag in ("--target", "--draft", "--prompt", "--max-new-tokens", "--temperature"):
        assert flag in text
