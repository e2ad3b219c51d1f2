"""Tiny target/drafter folders for the SGLang plugin tests (imported as ``_pair``: a test module
importing ``conftest`` gets whichever conftest was imported last, tests/ops' one when both
directories are collected together)."""

import json
from pathlib import Path


def write_pair(root: Path, *, domino: bool = True, block_size: int = 8, target_kw=None,
               drafter_edit=None, drop_weights=()) -> tuple[str, str]:
    """A tiny target (config.json only) and a saved random drafter under root."""
    from safetensors.torch import load_file, save_file

    from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target, tiny_target_config

    tdir, ddir = root / "target", root / "draft"
    tiny_target_config(**(target_kw or {})).save_pretrained(tdir)
    drafter = build_tiny_drafter(build_tiny_target(), domino=domino, block_size=block_size)
    drafter.save_pretrained(ddir)
    if drafter_edit:
        cfg = json.loads((ddir / "config.json").read_text())
        drafter_edit(cfg)
        (ddir / "config.json").write_text(json.dumps(cfg))
    if drop_weights:
        sd = load_file(str(ddir / "model.safetensors"))
        save_file({k: v for k, v in sd.items() if k not in drop_weights},
                  str(ddir / "model.safetensors"))
    return str(tdir), str(ddir)


def plain_greedy(target, prompt, n):
    """Greedy decoding, the whole sequence re-run every step (no cache, no speculation)."""
    import torch

    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(target(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]
