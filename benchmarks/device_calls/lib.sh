# Sourced by the call scripts of this folder (from the repository root on the GPU host).
#   call_begin NAME SHA   R=/tmp/rNAME emptied; the offline runtime + the plugin (gpu_preamble.sh,
#                         its output in $R/preamble.txt; exits on failure); $R/gpu.txt; a packer
#                         that puts $R into $OUT/rNAME.tgz every 25 s (a call cut by its limit
#                         still returns what it wrote)
#   call_end              stops the packer, keeps the last 200 kB of logs over 300 kB, packs $R
call_begin() {
  CALL="r$1"; R="/tmp/$CALL"; rm -rf "$R"; mkdir -p "$R"
  export DOMINO_COMMIT="$2"
  source benchmarks/gpu_preamble.sh .device/sglang-trim.tar.xz > "$R/preamble.txt" 2>&1 \
    || { cat "$R/preamble.txt"; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt"
  ( while true; do sleep 25; tar czf "$OUT/.c.tgz" -C /tmp "$CALL" 2>/dev/null
      mv "$OUT/.c.tgz" "$OUT/$CALL.tgz"; done ) & PACKER=$!
}

call_end() {
  kill "$PACKER" 2>/dev/null; sleep 1; rm -f "$OUT/.c.tgz"
  find "$R" -name "*.log" -size +300k -exec sh -c 'tail -c 200000 "$1" > "$1.tail"; rm "$1"' _ {} \;
  tar czf "$OUT/$CALL.tgz" -C /tmp "$CALL"
}

# GB: the GPU's memory in GB (1e9 bytes: the memory plans count safetensors bytes), recorded
gpu_gb() {
  GB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 | awk '{printf "%.1f", $1*1.048576/1000}')
  echo "gpu_gb=$GB" >> "$R/gpu.txt"
}

# the tiny pair inflated to Qwen3-8B cost in fp16 at /tmp/p8b (~30-45 s; kept when an earlier
# call on the same warm machine built it), its log in $R/inflate.txt, inflate.json beside it
inflate_8b() {
  if [ -f /tmp/p8b/inflate.json ]; then echo "kept from an earlier call" > "$R/inflate.txt"
  else
    python3 -m domino_sglang.bench.inflate --src assets/domino-tiny --shape qwen3-8b --out /tmp/p8b --device cuda --dtype float16 --quiet > "$R/inflate.txt" 2>&1
    echo "rc=$? ${SECONDS}s" >> "$R/inflate.txt"
  fi
  cp /tmp/p8b/inflate.json "$R/" 2>/dev/null
}
