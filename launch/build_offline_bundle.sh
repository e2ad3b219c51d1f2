#!/usr/bin/env bash
# Build one archive that installs SGLang 0.5.17 + domino-sglang on an air-gapped GPU host that
# already has Python 3.12, torch 2.11.0+cu130 and triton 3.6.0 (the project's H200 host) but no
# network.
#
#   bash launch/build_offline_bundle.sh [OUT]   # in the clone, on a machine with PyPI access;
#                                               # OUT (resolved against the current folder)
#                                               # defaults to ./domino-sglang-offline-py312.tar.xz
#                                               # (keep it out of git)
#
# On the GPU host:
#   tar -xJf domino-sglang-offline-py312.tar.xz -C /opt      # -> /opt/domino312/
#   export PYTHONPATH=/opt/domino312${PYTHONPATH:+:$PYTHONPATH}
#   python3 -m sglang.launch_server ... --speculative-algorithm domino ...
#
# How (the recipe of the project's H200 bundle, whose package list is
# launch/h200_bundle_manifest.txt): wheels are fetched with pinned versions
# for cp312 / manylinux x86_64, WITHOUT dependencies (torch, triton, CUDA libraries and
# nvidia-* are expected on the host), installed with `pip install --no-deps --target`, then
# sglang-kernel is trimmed to the sm90 (Hopper) ops, xgrammar's static lib is removed, and the
# folder is packed with xz. domino-sglang itself is installed into the same folder, with its
# dist-info, so the `sglang.srt.plugins` entry point is found through PYTHONPATH.
#
# Measured (2026-11-29, build machine with Python 3.11 / pip 23.2, 2 CPU cores): 54.1 MB
# (51.6 MiB; the H200 bundle sglang-0.5.17-py312-h200.tar.xz is 52.4 MB), 128 s with an empty
# pip cache (383 MB sglang-kernel wheel included), 195-207 s in two other runs; xz -9 is most of it.
# Verified here: 51 distributions = the 50 of launch/h200_bundle_manifest.txt (same versions)
# + domino_sglang-0.1.0; all 13,013 files it shares with the H200 bundle are byte-identical
# (sgl_kernel keeps spatial_ops + sm90/common_ops only, flashinfer JIT sources kept, no
# libxgrammar.a); extra vs that bundle: domino_sglang, sglang/test and sglang/multimodal_gen
# (pure Python, ~1.2k files), not trimmed; it has no bin/. Under Python 3.12.1 with only the
# unpacked folder on PYTHONPATH: entry_points(group="sglang.srt.plugins") finds `domino =
# domino_sglang.sglang_plugin:register`, domino_sglang/kernels/domino_head.py is present and no
# top-level `kernels` exists, and the cp312 binaries (pydantic_core, orjson, msgspec, tokenizers,
# jiter, rpds, zmq, pybase64, setproctitle, cffi, tvm_ffi) import.
# Run on the GPU host (H100, 2026-12-07, commit d7fcd64; 54,223,404 bytes built in 141 s here):
# unpacked into /opt, the plugin registered from /opt/domino312 and a Domino server answered
# chat and /generate (benchmarks/results/session9_20261207/airgapped_h100/). Deps the H200 host
# provides (torch, numpy, typing_extensions, httpx, click, annotated_doc, ...) are not in the
# archive, as in the H200 bundle.
set -euo pipefail
# OUT is resolved against the caller's directory (before the cd below: a relative OUT used to
# land in the temporary folder and be deleted with it).
OUT="$(realpath -m "${1:-$PWD/domino-sglang-offline-py312.tar.xz}")"
cd "$(dirname "$0")/.."
REPO="$PWD"
case "$OUT" in "$REPO"/*) echo "note: $OUT is inside the repository: do not commit it" >&2;; esac
WORK="$(mktemp -d)"
SITE="$WORK/domino312"
WHL="$WORK/wheels"
mkdir -p "$SITE" "$WHL"
trap 'rm -rf "$WORK"' EXIT

# Pins: sglang 0.5.17's own pins (torch 2.11.0 stays on the host), then the light deps that
# its imports need (the MANIFEST of the project's H200 bundle).
PINS=(
  sglang==0.5.17 sglang-kernel==0.4.5 flashinfer-python==0.6.15.post1
  transformers==5.12.1 tokenizers==0.22.2 xgrammar==0.2.1 apache-tvm-ffi==0.1.11
  openai==2.6.1
  annotated-types==0.8.0 asttokens==3.0.2 cffi==2.1.1 compressed-tensors==0.20.1 dill==0.4.1
  distro==1.9.0 executing==2.3.0 fastapi==0.165.0 gguf==0.19.0 ipython==9.18.1
  ipython-pygments-lexers==1.1.1 jiter==0.19.0 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 loguru==0.7.3 matplotlib-inline==0.2.2 msgspec==0.22.0
  orjson==3.13.0 partial-json-parser==0.2.1.1.post7 pexpect==4.9.0 prompt-toolkit==3.0.53
  ptyprocess==0.7.0 pure-eval==0.2.4 pybase64==1.5.1 pycparser==3.12 pydantic==2.14.4
  pydantic-core==2.50.5 python-multipart==0.0.34 pyzmq==27.3.0 referencing==0.37.0
  rpds-py==2026.9.1 setproctitle==1.3.8 sniffio==1.3.1 soundfile==0.13.1 stack-data==0.6.3
  starlette==1.10.0 traitlets==5.16.1 truststore==0.10.5 typing-inspection==0.4.5
  uvicorn==0.54.0 wcwidth==0.9.4 opentelemetry-api==1.45.2
)
# pip matches manylinux_2_N tags exactly (no "this glibc or older" inference with --platform),
# so every tag the host's glibc (2.39) accepts is listed: sglang 0.5.17 is manylinux_2_34 only,
# pyzmq 27.3.0 manylinux_2_26, soundfile manylinux_2_28, sglang-kernel manylinux2014, ...
PLATFORMS=()
for n in $(seq 39 -1 5); do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
            --platform manylinux1_x86_64 --platform any)

python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d "$WHL" "${PINS[@]}"
# Our package (pure Python) as a wheel, built from a clean copy of the sources so that nothing
# (build/, *.egg-info, a stale build/lib) is written to or picked up from the repository.
# setup.py maps the top-level kernels/ folder to domino_sglang.kernels.
SRC="$WORK/src"
mkdir -p "$SRC"
tar -cf - --exclude='__pycache__' --exclude='*.pyc' setup.py domino_sglang kernels | tar -xf - -C "$SRC"
python3 -m pip wheel --no-deps -w "$WHL" "$SRC"
[ "$(ls "$WHL" | wc -l)" -eq $(( ${#PINS[@]} + 1 )) ] || { echo "expected $(( ${#PINS[@]} + 1 )) wheels:"; ls "$WHL"; exit 1; }

python3 -m pip install --no-deps --no-compile --target "$SITE" --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" --only-binary=:all: "$WHL"/*.whl

# Trim (as the H200 bundle): sglang-kernel keeps only the sm90 ops (the H200 loads
# sgl_kernel/sm90/common_ops; sm100/ is a folder, flash_ops, flashmla_ops and infllm_ops are
# files), xgrammar's static library goes, and so do bin/ scripts (their shebang is this
# machine's python; use `python3 -m ...` on the host).
SGLK="$SITE/sgl_kernel"
rm -rfv "$SGLK/sm100"
find "$SGLK" -name '*.so' \( -name '*flash_ops*' -o -name '*flashmla*' -o -name '*infllm*' \) -print -delete
find "$SITE" -path '*xgrammar*' -name '*.a' -print -delete
rm -rf "$SITE/bin"
find "$SITE" -name '__pycache__' -type d -prune -exec rm -rf {} +

# Sanity: the sm90 ops are kept, the plugin entry point is in the bundled dist-info, the Triton
# kernels are domino_sglang.kernels (never a top-level kernels/: sglang uses the PyPI `kernels`).
ls "$SGLK"/sm90/common_ops.*.so >/dev/null
grep -qx "domino = domino_sglang.sglang_plugin:register" "$SITE"/domino_sglang-*.dist-info/entry_points.txt
[ -f "$SITE/domino_sglang/kernels/domino_head.py" ] || { echo "domino_sglang/kernels missing" >&2; exit 1; }
[ ! -e "$SITE/kernels" ] || { echo "a top-level kernels/ was installed" >&2; exit 1; }
echo "distributions: $(ls -d "$SITE"/*.dist-info | wc -l)"

mkdir -p "$(dirname "$OUT")"
(cd "$WORK" && tar -cf - --owner=0 --group=0 domino312 | xz -T0 -9 > "$OUT")
ls -lh "$OUT"
echo "built in ${SECONDS}s. Unpack on the host and put domino312/ on PYTHONPATH (see the header)."
