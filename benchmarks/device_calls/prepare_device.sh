#!/usr/bin/env bash
# Build the git-ignored .device/ folder that the GPU calls of this folder carry (a fresh checkout
# has none): the trimmed offline SGLang bundle + its extras + gpu-env.sh + the JIT cache
# (launch/trim_device_bundle.sh, ~2-7 min of xz) and, for the drafter calls, the study's
# training prompts (.device/study: the recipe's prepare stage with 32768 regen prompts and the
# multi-turn prompts, tokenized with the shipped target's tokenizer, ~3 min on 2 cores).
#   bash benchmarks/device_calls/prepare_device.sh [--no-study]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f .device/sglang-trim.tar.xz ] || bash launch/trim_device_bundle.sh
if [ "${1:-}" != "--no-study" ] && [ ! -f .device/study/regen_prompts.jsonl.gz ]; then
  mkdir -p .data/tokenizer .device/study
  # the target's own tokenizer: the prepare stage trains one only where none is there
  cp assets/domino-tiny/target/tokenizer.json assets/domino-tiny/target/tokenizer_config.json \
     .data/tokenizer/
  cfg="$(mktemp)"
  python3 -m domino_sglang.train.recipe --print-config | python3 -c "
import json, sys
d = json.load(sys.stdin); d['prepare']['num_regen_prompts'] = 32768
json.dump(d, open(sys.argv[1], 'w'))" "$cfg"
  python3 -m domino_sglang.train.recipe --config "$cfg" --data .data --stages prepare --quiet
  # same tokenizer and split as the shipped pair: the held-out prompts must be identical
  cmp -s .data/heldout_prompts.jsonl assets/domino-tiny/heldout_prompts.jsonl || {
    echo "prepare_device.sh: .data/heldout_prompts.jsonl differs from the shipped held-out" \
         "prompts (another tokenizer or data split?)" >&2; exit 1; }
  gzip -9 -c .data/regen_prompts.jsonl > .device/study/regen_prompts.jsonl.gz
  gzip -9 -c .data/regen_prompts_multiturn.jsonl > .device/study/regen_prompts_multiturn.jsonl.gz
fi
ls -la .device .device/study 2>/dev/null
