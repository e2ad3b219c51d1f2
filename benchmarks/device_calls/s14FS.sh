#!/usr/bin/env bash
# session 14, one call when the device budget allows only one: on a GPU that holds the five
# 8B-cost servers in one memory wave (H200, >= 120 GB) the 8B-cost side by side (s14F.sh),
# else (H100) the sampled-drafts / planted-tree test (s14S.sh).
#   bash benchmarks/device_calls/s14FS.sh SHA TOTAL_S
MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
echo "GPU memory ${MIB} MiB"
if [ "${MIB:-0}" -ge 114000 ]; then
  bash "$(dirname "$0")/s14F.sh" "$1" "$2"
else
  bash "$(dirname "$0")/s14S.sh" "$1" "$2"
fi
