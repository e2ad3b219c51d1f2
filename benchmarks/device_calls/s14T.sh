#!/usr/bin/env bash
# session 14, GPU call T: (1) SGLang tau (fp16, c=8, 64 held-out prompts) of the final drafters
# of call A (left in /tmp/study3 by it on the same warm machine, else carried in .device/d3)
# and of the shipped ones, with DOMINO_SAMPLED_DRAFTS=1 (T=0 and T=1) and without it (T=1),
# both sets at once; (2) #15 item 5 on the tiny pair: the tree sweep (topk x budget 2x16, 4x16,
# 4x32, 8x32) vs chain Domino vs AR at 1,16,64,4, fp16, adaptive trace on.
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz
#   .device/jit-cache-h200.tar.xz [.device/d3] (benchmarks/results moved aside)
SHA="$1"; TOTAL="${2:-500}"; TAU="${3:-150}"
source "$(dirname "$0")/lib.sh"
call_begin 14T "$SHA"
S=/tmp/study3
if [ ! -f $S/final-domino/drafter/config.json ] && ls .device/d3.part.* >/dev/null 2>&1; then
  cat .device/d3.part.* | xz -d | tar x -C /tmp; echo "finals from the carried parts" > $R/finals.txt
else
  echo "finals: $(ls -d $S/final-*/drafter 2>/dev/null | tr '\n' ' ')" > $R/finals.txt
fi
ST="python3 -m domino_sglang.train.study --target assets/domino-tiny/target --commit $SHA --stages sglang --variants base --num-prompts 64"
REF="--reference shipped-domino=assets/domino-tiny/drafter-domino --reference shipped-dflash=assets/domino-tiny/drafter-dflash"
OFF="--reference shipped-domino=assets/domino-tiny/drafter-domino"
[ -f $S/final-domino/drafter/config.json ] && OFF="$OFF --reference final-domino=$S/final-domino/drafter --reference final-dflash=$S/final-dflash/drafter"
mkdir -p $S
( timeout -s TERM $TAU $ST --out $S $REF --server-env DOMINO_SAMPLED_DRAFTS=1 --temperatures 0,1 --base-port 33000 > $R/tau_sd_on.txt 2>&1; echo "rc=$?" >> $R/tau_sd_on.txt ) & P1=$!
( timeout -s TERM $TAU $ST --out /tmp/sdoff $OFF --temperatures 1 --base-port 33100 > $R/tau_sd_off.txt 2>&1; echo "rc=$?" >> $R/tau_sd_off.txt ) & P2=$!
wait $P1 $P2
mkdir -p $R/tau_on $R/tau_off; cp $S/sglang/*.json $R/tau_on/ 2>/dev/null; cp /tmp/sdoff/sglang/*.json $R/tau_off/ 2>/dev/null
for f in $S/sglang/*.log /tmp/sdoff/sglang/*.log; do [ -f "$f" ] && tail -c 60000 "$f" > $R/$(basename $(dirname $(dirname $f)))_$(basename $f).tail; done
echo "tau done ${SECONDS}s" >> $R/finals.txt
BUD=$((TOTAL - SECONDS - 20))
timeout -s TERM $((BUD + 10)) python3 benchmarks/side_by_side.py --dtype float16 --systems ar domino domino_tree --tree-configs 2x16,4x16,4x32,8x32 --levels 1,16,64,4 --adaptive-trace --time-budget-s $BUD --commit $SHA --out-dir $R/sbs > $R/sbs.txt 2>&1; echo "rc=$?" >> $R/sbs.txt
call_end
ls -la $OUT; cat $R/finals.txt; grep "\[study\] sglang" $R/tau_sd_on.txt $R/tau_sd_off.txt; tail -n 3 $R/tau_sd_on.txt $R/tau_sd_off.txt; tail -n 50 $R/sbs.txt
