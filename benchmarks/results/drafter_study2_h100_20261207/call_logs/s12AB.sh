#!/usr/bin/env bash
# session 12, one GPU call for #16 item 1's missing points (A and B of PLAN_s12 merged: device
# starts were scarce): regen (32768 single-turn + the multi-turn prompts), nine variants trained
# in parallel (base, gamma10, gamma4, gru256, layers2, batch64, lrconst, dataT0, multiturn),
# beside them #15 item 4's sampled test of tree mode (domino_tree + planted_tree, T=1 and T=0.7
# top-k 8), then the variants' SGLang tau (fp16, c=8, T=0 / T=1). Drafters come back for the
# Transformers-backend tau on the CPU. Carry: .device/gpu-env.sh .device/sglang-trim.tar.xz
#   .device/bundle-extras.tar.xz .device/study .device/calls
SHA="$1"; TOTAL="${2:-585}"; SGL="${3:-185}"; RGL="${4:-75}"
VARIANTS="base,gamma10,gamma4,gru256,layers2,batch64,lrconst,dataT0,multiturn"
R=/tmp/rA; S=/tmp/study2; rm -rf $R $S /tmp/drafters2_*.tar; mkdir -p $R
export DOMINO_COMMIT=$SHA
source benchmarks/gpu_preamble.sh .device/sglang-trim.tar.xz > $R/preamble.txt 2>&1 || { cat $R/preamble.txt; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $R/gpu.txt
pack() {
  ( cd /tmp && find rA study2 -maxdepth 3 \( -name "*.json" -o -name "*.md" -o -name "*.jsonl" -o -name "*.png" -o -name "*.txt" -o -name "train.log" \) -size -2M 2>/dev/null > /tmp/pack.lst; tar czf $OUT/.p.tgz -T /tmp/pack.lst 2>/dev/null; mv $OUT/.p.tgz $OUT/study2_meta.tgz )
}
( while true; do sleep 40; pack; done ) & PACKER=$!
ST="python3 -m domino_sglang.train.study --target assets/domino-tiny/target --out $S --commit $SHA"
echo "regen start ${SECONDS}s" > $R/order.txt
timeout -s TERM 150 $ST --prompts .device/study/regen_prompts.jsonl.gz --multiturn-prompts .device/study/regen_prompts_multiturn.jsonl.gz --stages regen --regen-time-limit-s $RGL > $R/regen.txt 2>&1; echo "rc=$?" >> $R/regen.txt
TL=$((TOTAL - SGL - 25 - SECONDS)); echo "train start ${SECONDS}s, --time-limit-s $TL" >> $R/order.txt
( timeout -s TERM $((TL + 20)) python3 benchmarks/sampled_gpu.py --systems domino_tree,planted_tree --configs t1,t07k8 --tree-topk 4 --tree-budget 32 --mem-fraction 0.7 --base-port 32100 --time-budget-s $((TL + 5)) --commit $SHA --out-dir $R/sampled > $R/sampled.txt 2>&1; echo "rc=$?" >> $R/sampled.txt ) & SAMPLED=$!
timeout -s TERM $((TL + 45)) $ST --stages train --variants $VARIANTS --time-limit-s $TL > $R/train.txt 2>&1; echo "rc=$?" >> $R/train.txt
echo "train done ${SECONDS}s" >> $R/order.txt
wait $SAMPLED; echo "sampled done ${SECONDS}s" >> $R/order.txt
for v in ${VARIANTS//,/ }; do [ -d $S/$v/drafter ] && tar rf /tmp/drafters2_0.tar -C /tmp study2/$v/drafter; done
[ -f /tmp/drafters2_0.tar ] && gzip -c /tmp/drafters2_0.tar > $OUT/drafters2.tgz
timeout -s TERM $((TOTAL - 12 - SECONDS)) $ST --stages sglang --variants $VARIANTS --num-prompts 64 > $R/sglang.txt 2>&1; echo "rc=$?" >> $R/sglang.txt
echo "sglang done ${SECONDS}s" >> $R/order.txt
kill $PACKER 2>/dev/null; sleep 1
find $S/sglang $R -name "*.log" -size +1M -exec sh -c 'tail -c 300000 "$1" > "$1.tail"; rm "$1"' _ {} \;
pack; tar czf $OUT/rB.tgz -C /tmp study2/sglang rA/sampled 2>/dev/null
ls -la $OUT; cat $R/order.txt; tail -n 3 $R/regen.txt; tail -n 6 $R/train.txt; tail -n 22 $R/sampled.txt; grep "\[study\] sglang" $R/sglang.txt; tail -n 2 $R/sglang.txt
