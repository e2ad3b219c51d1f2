#!/usr/bin/env bash
# session 14, GPU call A (#16 items 1-2, #15 item 4, sampled drafts): regenerate 32768 single-turn
# + the multi-turn prompts, then the final drafters of the combined recipe
# (--final-adopt data2x,gamma4,batch64,lrconst,multiturn: three domino-train runs in parallel,
# as long as the committed drafters' 451 s as the call allows), and beside them the sampled
# losslessness test: sampled drafts (domino_sd + planted_sd) and tree mode (domino_tree +
# planted_tree) at T=1 and T=0.7 top-k 8. Drafters come back as d3.part.* (xz tar parts).
# Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz .device/bundle-extras.tar.xz .device/study
#   (benchmarks/results moved aside; the JIT cache does not fit beside the prompts: on a machine
#   warm from an earlier call the caches are already there, else the servers' start is slower)
SHA="$1"; TOTAL="${2:-585}"; RGL="${3:-75}"
R=/tmp/r14A; S=/tmp/study3; rm -rf $R $S; mkdir -p $R
export DOMINO_COMMIT=$SHA
source benchmarks/gpu_preamble.sh .device/sglang-trim.tar.xz > $R/preamble.txt 2>&1 || { cat $R/preamble.txt; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $R/gpu.txt
pack() {
  ( cd /tmp && find r14A study3 -maxdepth 3 \( -name "*.json" -o -name "*.md" -o -name "*.jsonl" -o -name "*.png" -o -name "*.txt" -o -name "train.log" -o -name "*.tail" \) -size -2M 2>/dev/null > /tmp/pack.lst; tar czf $OUT/.p.tgz -T /tmp/pack.lst 2>/dev/null; mv $OUT/.p.tgz $OUT/a_meta.tgz )
}
( while true; do sleep 40; pack; done ) & PACKER=$!
ST="python3 -m domino_sglang.train.study --target assets/domino-tiny/target --out $S --commit $SHA"
echo "regen start ${SECONDS}s" > $R/order.txt
timeout -s TERM 160 $ST --prompts .device/study/regen_prompts.jsonl.gz --multiturn-prompts .device/study/regen_prompts_multiturn.jsonl.gz --stages regen --regen-time-limit-s $RGL > $R/regen.txt 2>&1; echo "rc=$?" >> $R/regen.txt
TL=$((TOTAL - 45 - SECONDS)); [ $TL -gt 451 ] && TL=451
echo "final start ${SECONDS}s, --final-time-limit-s $TL" >> $R/order.txt
( timeout -s TERM $((TL + 15)) python3 benchmarks/sampled_gpu.py --systems domino_sd,planted_sd,domino_tree,planted_tree --configs t1,t07k8 --tree-topk 4 --tree-budget 32 --mem-fraction 0.7 --base-port 32100 --time-budget-s $TL --commit $SHA --out-dir $R/sampled > $R/sampled.txt 2>&1; echo "rc=$?" >> $R/sampled.txt ) & SAMPLED=$!
timeout -s TERM $((TL + 40)) $ST --stages final --variants base --final-adopt data2x,gamma4,batch64,lrconst,multiturn --final-time-limit-s $TL > $R/final.txt 2>&1; echo "rc=$?" >> $R/final.txt
echo "final done ${SECONDS}s" >> $R/order.txt
rm -f /tmp/d3.tar
for v in final-domino final-dflash final-nocurriculum; do [ -d $S/$v/drafter ] && tar rf /tmp/d3.tar -C /tmp study3/$v/drafter; done
[ -f /tmp/d3.tar ] && xz -T0 -6 -c /tmp/d3.tar | split -b 4M - $OUT/d3.part.
wait $SAMPLED; echo "sampled done ${SECONDS}s" >> $R/order.txt
kill $PACKER 2>/dev/null; sleep 1
find $R $S -name "*.log" -size +1M -exec sh -c 'tail -c 300000 "$1" > "$1.tail"; rm "$1"' _ {} \;
pack; tar czf $OUT/a_sampled.tgz -C /tmp r14A/sampled 2>/dev/null
ls -la $OUT; cat $R/order.txt; tail -n 3 $R/regen.txt; tail -n 8 $R/final.txt; tail -n 25 $R/sampled.txt
