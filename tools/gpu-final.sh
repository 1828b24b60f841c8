#!/bin/bash
# gpu-final: one device call for a session's closing numbers, from the tools/pack-gpu.sh bundle
# (~9 min on an H100): the GPU test programs (+ memcheck on the op test), batch-1 decode with
# graphs on and off and without the GDN decode kernel (HS_CUDA_SKIP=gdn: what it costs), the
# seed's benchmark with all 1,280 prompts (bf16 state, the seed's setting, and fp32 state), its
# first 128 requests with bf16 and with fp32 state, and the coupled layout at the same memory
# (bf16 state, 128 requests).
#   device: carry [".gpu/eng"], command  bash .gpu/eng/env.sh bash ./gpu-final.sh [tests|e2e]
# (one part only with an argument: the whole runs close to the device tool's 10-minute limit)
# $OUT gets summary.txt (also printed) and logs.tar.gz.
set -u
export PATH=$PATH:/usr/local/cuda/bin
L=/tmp/gpu-final-logs; rm -rf $L; mkdir -p $L
R=$L/summary.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $R
t() {
  local n=$1 to=$2 s=$(date +%s); shift 2
  if timeout "$to" "$@" > "$L/$n.log" 2>&1; then r=pass; else r="FAIL rc=$?"; fi
  echo "$n: $r $(( $(date +%s) - s ))s ($(grep -E 'total tokens/s|TPOT' "$L/$n.log" | tr -s ' ' | tr '\n' ' ' |
    cut -c1-120)$(tail -1 "$L/$n.log" | cut -c1-60))" | tee -a $R
}
what=${1:-all}
[ "$what" = e2e ] || for x in test_gpu_ops test_gemv test_gdn_decode test_gdn_prefill test_attn_decode test_attn_prefill test_moe \
         test_gpu_sample test_gpu_graphs test_gpu_model test_gpu_engine; do
  [ -x bin/$x ] && t $x 120 bin/$x .
done
[ "$what" = e2e ] || t memcheck_test_gpu_ops 90 compute-sanitizer --tool memcheck --error-exitcode 3 bin/test_gpu_ops .
if [ "$what" != tests ]; then
B="bin/hyserve bench --device cuda --model qwen3.5-9b"
B1="--input-len 128 --output-len 128 --range-ratio 1 --num-prompts 3 --max-concurrency 1"
t e2e_batch1 40 $B $B1
HS_CUDA_GRAPHS=0 t e2e_batch1_nographs 40 $B $B1
HS_CUDA_SKIP=gdn t e2e_batch1_skipgdn 40 $B $B1
t e2e_seed_bf16_1280 240 $B --max-num-batched-tokens 4096 --state-dtype bf16
t e2e_seed_f32_1280 240 $B --max-num-batched-tokens 4096
t e2e_seed_bf16_128 60 $B --max-num-batched-tokens 4096 --state-dtype bf16 --num-prompts 128
t e2e_seed_f32_128 60 $B --max-num-batched-tokens 4096 --num-prompts 128
t e2e_coupled_128 150 $B --max-num-batched-tokens 4096 --state-dtype bf16 --state-layout coupled --num-prompts 128
fi
for f in $L/e2e_*.log; do [ -f "$f" ] || continue
  echo "== $(basename $f .log): $(grep -E 'requests|total tokens/s|TPOT|TTFT|mean running|roofline' $f | tr -s ' ' |
    tr '\n' ' ')" >> $R
done
tar -C $L -czf $OUT/logs.tar.gz . && cp $R $OUT/summary.txt
echo; cat $R
