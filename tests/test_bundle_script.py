"""launch/build_offline_bundle.sh: syntax, pins and platform tags (CPU only, no network).

The build itself (PyPI downloads, ~2-4 min) is not run here; see the script's header.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "build_offline_bundle.sh"
MANIFEST = ROOT / "launch" / "h200_bundle_manifest.txt"  # the H200 bundle's package list

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _bash_array(name: str) -> list[str]:
    """The values of a bash array assigned in the script, evaluated by bash (no command runs)."""
    text = SCRIPT.read_text()
    if name == "PINS":
        block = re.search(r"^PINS=\(.*?^\)", text, re.S | re.M).group(0)
    else:  # PLATFORMS: the lines that build it
        block = "\n".join(l for l in text.splitlines() if l.startswith(("PLATFORMS", "for n in", "            --platform")))
    out = subprocess.run(["bash", "-c", f'{block}\nprintf "%s\\n" "${{{name}[@]}}"'],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_bash_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_pins_are_exact_and_unique():
    pins = _bash_array("PINS")
    assert len(pins) >= 45
    names = []
    for pin in pins:
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+-]*)", pin)
        assert m, pin
        names.append(re.sub(r"[-_.]+", "-", m.group(1)).lower())
    assert len(set(names)) == len(names)
    assert {"sglang==0.5.17", "sglang-kernel==0.4.5", "flashinfer-python==0.6.15.post1",
            "transformers==5.12.1", "tokenizers==0.22.2", "xgrammar==0.2.1"} <= set(pins)
    # torch, triton and CUDA libraries stay on the host
    assert not {"torch", "triton"} & set(names)
    assert not any(n.startswith("nvidia-") for n in names)


def test_pins_match_h200_manifest():
    pins = {re.sub(r"[-_.]+", "_", p.split("==")[0]).lower() + "-" + p.split("==")[1]
            for p in _bash_array("PINS")}
    manifest = {l.strip().lower() for l in MANIFEST.read_text().splitlines() if l.strip()}
    assert pins == manifest


def test_platform_tags_cover_the_wheels():
    plats = _bash_array("PLATFORMS")
    tags = [p for p in plats if p != "--platform"]
    # pip matches manylinux_2_N exactly: sglang 0.5.17 is manylinux_2_34 only, pyzmq 27.3.0
    # manylinux_2_26, soundfile manylinux_2_28, sglang-kernel manylinux2014; host glibc is 2.39
    for t in ("manylinux_2_34_x86_64", "manylinux_2_26_x86_64", "manylinux_2_28_x86_64",
              "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"):
        assert t in tags, t
    assert not any(re.fullmatch(r"manylinux_2_(\d+)_x86_64", t) and int(t.split("_")[2]) > 39
                   for t in tags)


def test_trims_and_checks_present():
    text = SCRIPT.read_text()
    assert 'rm -rfv "$SGLK/sm100"' in text  # a folder, not a *sm100*.so file
    for pat in ("*flash_ops*", "*flashmla*", "*infllm*", "'*xgrammar*' -name '*.a'"):
        assert pat in text, pat
    assert "domino = domino_sglang.sglang_plugin:register" in text
    assert "domino_sglang/kernels/domino_head.py" in text
    # OUT is made absolute before the script changes directory
    assert text.index('OUT="$(realpath') < text.index('cd "$(dirname "$0")/.."')
    # no path of the project's own machines (a user has none of them)
    assert "/work/" not in text and "/tmp/bundle" not in text


def test_docs_name_no_machine_specific_path():
    doc = (ROOT / "launch" / "README.md").read_text()
    assert "/work/" not in doc and "/tmp/bundle" not in doc
    assert 'pip install "domino-sglang[serve]"' not in doc  # not on PyPI
