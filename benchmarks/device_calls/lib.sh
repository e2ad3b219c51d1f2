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
