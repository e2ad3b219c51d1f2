#!/usr/bin/env bash
# Trim the offline SGLang bundle so that it fits beside this repository in one GPU call of the
# device tool (64 MiB per call: the full 52 MB bundle + the ~18 MB tree do not fit).
#   bash launch/trim_device_bundle.sh [BUNDLE] [OUTDIR]
#   (defaults: ../shared/device/sglang-0.5.17-py312-h200.tar.xz, .device/)
# Writes OUTDIR/sglang-trim.tar.xz (~43 MB) and OUTDIR/bundle-extras.tar.xz (~1 MB), and copies
# gpu-env.sh + jit-cache-h200.tar.xz beside them; benchmarks/gpu_preamble.sh unpacks both.
# Trim: debug info stripped from libxgrammar_bindings.so (53 -> 3 MB) and tokenizers.abi3.so;
# CUTLASS examples/test/python and CCCL python/docs/benchmarks dropped (flashinfer's JIT uses
# only their include folders, and the JIT cache makes it skip compiling); libsndfile's data
# (`_soundfile_data`, loaded by transformers' audio utils at import) and the packages' `tests`
# folders go to bundle-extras. Takes ~4-7 min of xz on 2 cores.
set -euo pipefail
bundle="${1:-../shared/device/sglang-0.5.17-py312-h200.tar.xz}"
out="${2:-.device}"
src="$(cd "$(dirname "$bundle")" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xJf "$bundle" -C "$work"
site="$work/site312"
mkdir -p "$work/extras/site312"
mv "$site/_soundfile_data" "$work/extras/site312/"
while IFS= read -r d; do
  rel="${d#"$work/"}"
  mkdir -p "$work/extras/$(dirname "$rel")"
  mv "$d" "$work/extras/$rel"
done < <(find "$site" -type d -name tests -prune -not -path "*/cccl/*")
rm -rf "$site"/flashinfer/data/cutlass/{test,python,examples} \
       "$site"/flashinfer/data/cccl/{python,docs,benchmarks}
find "$site" -type d -name __pycache__ -prune -exec rm -rf {} +
strip --strip-debug "$site/xgrammar/libxgrammar_bindings.so" "$site/tokenizers/tokenizers.abi3.so"
(cd "$work" && tar -cf - site312 | xz -9 -T0 > "$out/sglang-trim.tar.xz")
(cd "$work/extras" && tar -cJf "$out/bundle-extras.tar.xz" site312)
cp "$src/gpu-env.sh" "$src/jit-cache-h200.tar.xz" "$out/"
ls -la "$out"
