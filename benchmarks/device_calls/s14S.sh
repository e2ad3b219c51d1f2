#!/usr/bin/env bash
# session 14, GPU call S (sampled drafts on the GPU; #15 item 4's planted T=0.7 configuration):
# the sampled losslessness test of DOMINO_SAMPLED_DRAFTS=1 (domino_sd + planted_sd) and of tree
# mode (domino_tree + planted_tree) at T=1 and T=0.7 top-k 8, and beside it the SGLang tau of the
# shipped drafters with the sampled drafts on (T=0, T=1) and off (T=1).
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz
#   .device/jit-cache-h200.tar.xz (benchmarks/results moved aside)
# env: SYSTEMS, CONFIGS (sampled_gpu lists), TAUDFLASH ("" drops the shipped DFlash), TAUTEMPS,
# NOTAU=1 (no tau servers)
SHA="$1"; TOTAL="${2:-400}"; rm -rf /tmp/sdon /tmp/sdoff
source "$(dirname "$0")/lib.sh"
call_begin 14S "$SHA"
ST="python3 -m domino_sglang.train.study --target assets/domino-tiny/target --commit $SHA --stages sglang --variants base --num-prompts 64 --reference shipped-domino=assets/domino-tiny/drafter-domino"
P1=; P2=
if [ -z "${NOTAU:-}" ]; then
( timeout -s TERM 200 $ST ${TAUDFLASH---reference shipped-dflash=assets/domino-tiny/drafter-dflash} --out /tmp/sdon --server-env DOMINO_SAMPLED_DRAFTS=1 --temperatures ${TAUTEMPS:-0,1} --base-port 33000 > $R/tau_sd_on.txt 2>&1; echo "rc=$?" >> $R/tau_sd_on.txt ) & P1=$!
( timeout -s TERM 200 $ST --out /tmp/sdoff --temperatures 1 --base-port 33100 > $R/tau_sd_off.txt 2>&1; echo "rc=$?" >> $R/tau_sd_off.txt ) & P2=$!
fi
BUD=$((TOTAL - SECONDS - 25))
timeout -s TERM $((BUD + 10)) python3 benchmarks/sampled_gpu.py --systems ${SYSTEMS:-domino_sd,planted_sd,domino_tree,planted_tree} --configs ${CONFIGS:-t07k8,t1} --tree-topk 4 --tree-budget 32 --mem-fraction 0.7 --base-port 32100 --time-budget-s $BUD --commit $SHA --out-dir $R/sampled > $R/sampled.txt 2>&1; echo "rc=$?" >> $R/sampled.txt
[ -n "$P1" ] && wait $P1 $P2
mkdir -p $R/tau_on $R/tau_off; cp /tmp/sdon/sglang/*.json $R/tau_on/ 2>/dev/null; cp /tmp/sdoff/sglang/*.json $R/tau_off/ 2>/dev/null
for d in sdon sdoff; do for f in /tmp/$d/sglang/*.log; do [ -f "$f" ] && tail -c 60000 "$f" > $R/${d}_$(basename $f).tail; done; done
call_end
ls -la $OUT; grep "\[study\] sglang" $R/tau_sd_on.txt $R/tau_sd_off.txt; tail -n 3 $R/tau_sd_on.txt $R/tau_sd_off.txt; tail -n 25 $R/sampled.txt
