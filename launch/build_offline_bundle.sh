#!/usr/bin/env bash
# Build one archive that installs SGLang 0.5.17 + domino-sglang on an air-gapped GPU host that
# already has Python 3.12 and torch 2.11.0+cu130 (and triton) but no network.
#
#   launch/build_offline_bundle.sh [OUT.tar.xz]     # on a machine with PyPI access
#
# On the GPU host:
#   tar -xJf domino-sglang-offline-py312.tar.xz -C /opt      # -> /opt/domino312/
#   export PYTHONPATH=/opt/domino312${PYTHONPATH:+:$PYTHONPATH}
#   python3 -m sglang.launch_server ... --speculative-algorithm domino ...
#
# How (the recipe of /work/shared/device/README.md): wheels are fetched with pinned versions
# for cp312 / manylinux x86_64, WITHOUT dependencies (torch, triton, CUDA libraries and
# nvidia-* are expected on the host), installed with `pip install --no-deps --target`, then
# sglang-kernel is trimmed to the sm90 (Hopper) ops, xgrammar's static lib is removed, and the
# folder is packed with xz. domino-sglang itself is installed into the same folder, with its
# dist-info, so the `sglang.srt.plugins` entry point is found through PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-$PWD/domino-sglang-offline-py312.tar.xz}"
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
PLATFORMS=()
for n in 2_28 2_27 2_24 2_17; do PLATFORMS+=(--platform "manylinux_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform any)

python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d "$WHL" "${PINS[@]}"
# our package (pure Python) as a wheel
python3 -m pip wheel --no-deps -w "$WHL" .

python3 -m pip install --no-deps --no-compile --target "$SITE" --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" --only-binary=:all: "$WHL"/*.whl

# Trim: sglang-kernel keeps only the sm90 ops; drop the static xgrammar library.
SGLK="$SITE/sgl_kernel"
if [ -d "$SGLK" ]; then
  find "$SGLK" -name '*.so' \( -name '*sm100*' -o -name '*flash_ops*' -o -name '*flashmla*' \
       -o -name '*infllm*' \) -print -delete
fi
find "$SITE" -path '*xgrammar*' -name '*.a' -print -delete
find "$SITE" -name '__pycache__' -type d -prune -exec rm -rf {} +

# Sanity: the entry point is declared in the bundled dist-info.
grep -q "domino = domino_sglang.sglang_plugin:register" "$SITE"/domino_sglang-*.dist-info/entry_points.txt

(cd "$WORK" && tar -cf - domino312 | xz -T0 -9 > "$OUT")
ls -lh "$OUT"
echo "Unpack on the host and put domino312/ on PYTHONPATH (see the header of this script)."
