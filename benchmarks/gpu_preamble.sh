#!/usr/bin/env bash
# Source on the offline GPU host, from the repository root, before any GPU script (the trimmed
# bundle and its extras are made here by launch/trim_device_bundle.sh; carry the four .device files):
#   source benchmarks/gpu_preamble.sh [BUNDLE]      (default .device/sglang-trim.tar.xz)
# 1. the offline SGLang 0.5.17 runtime (../shared/device/gpu-env.sh: unpacks to /tmp/site312);
# 2. domino-sglang importable from this tree without pip (the host has no network, so no build
#    isolation): the repository folder kernels/ linked as domino_sglang/kernels (what setup.py's
#    package_dir does), and a dist-info with the `sglang.srt.plugins` entry point on PYTHONPATH,
#    so SGLang's load_plugins() finds the plugin in the launcher and in every scheduler process.
bundle="${1:-.device/sglang-trim.tar.xz}"
source .device/gpu-env.sh "$bundle" || return 1
# the trimmed bundle (debug info stripped, CUTLASS examples and test folders dropped) ships its
# runtime data (soundfile's libsndfile, the test folders) separately
if [ -f .device/bundle-extras.tar.xz ] && [ ! -d /tmp/site312/_soundfile_data ]; then
  tar -xJf .device/bundle-extras.tar.xz -C /tmp || return 1
fi
[ -e domino_sglang/kernels ] || ln -s ../kernels domino_sglang/kernels
mkdir -p /tmp/domino-dist/domino_sglang-0.1.0.dist-info
printf 'Metadata-Version: 2.1\nName: domino-sglang\nVersion: 0.1.0\n' \
  > /tmp/domino-dist/domino_sglang-0.1.0.dist-info/METADATA
printf '[sglang.srt.plugins]\ndomino = domino_sglang.sglang_plugin:register\n' \
  > /tmp/domino-dist/domino_sglang-0.1.0.dist-info/entry_points.txt
export PYTHONPATH="$PWD:/tmp/domino-dist:$PYTHONPATH" PYTHONUNBUFFERED=1
python3 -c "from importlib.metadata import entry_points as e; assert any(p.name == 'domino' for p in e(group='sglang.srt.plugins')), 'plugin entry point not found'; import domino_sglang.kernels" || return 1
echo "domino-sglang importable from $PWD; commit ${DOMINO_COMMIT:-unknown}"
