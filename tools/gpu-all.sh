#!/bin/bash
# gpu-all: every GPU measurement issue 7 asks for, from the bundle tools/pack-gpu.sh makes,
# in three device calls (each under the 10-minute limit), logs tarred so that
# they all come back (the device tool returns at most 8 files).
#
#   here:    tools/pack-gpu.sh            (copies this script into .gpu/eng)
#            fla wheels for the peers, once:  python3 -m pip download --no-deps --only-binary=:all: \
#              --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#              -d .gpu/whl flash-linear-attention==0.6.0 fla-core==0.6.0
#   device:  carry [".gpu/eng", ".gpu/whl"], command  bash .gpu/eng/env.sh bash ./gpu-all.sh kernels
#            then, right after while the machine is warm, the same with e2e-a, then e2e-b
#
# kernels (~5 min): every test program (+ compute-sanitizer memcheck on the kernel and op
#   tests), every CUDA bench, fla's decode and chunk kernels, PyTorch SDPA.
# tests (~2.5 min): the tests and memcheck of `kernels` without the benches.
# e2e-a (~6.5 min): hyserve bench on the Qwen3.5-9B shape: batch 1 (graphs on and off,
#   and under HS_CUDA_PROF), the seed's shape with 1,280 prompts and fp32 state, and the
#   coupled layout at the same memory (128 prompts).
# e2e-b (~5.5 min): the seed's shape with bf16 state (the seed's setting), HF
#   transformers + fla at batch 1 and 16 (tools/bench_hf.py), and the server on the GPU
#   (tools/serve_smoke.py cuda).
# $OUT gets summary.txt (also printed) and logs.tar.gz.
set -u
what=${1:-kernels}
export PATH=$PATH:/usr/local/cuda/bin
L=/tmp/gpu-all-logs; rm -rf $L; mkdir -p $L
R=$L/summary.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $R
# t NAME TIMEOUT CMD...: run, log to $L/NAME.log, one line in the summary
t() {
  local n=$1 to=$2; shift 2
  if timeout "$to" "$@" > "$L/$n.log" 2>&1; then r=pass; else r="FAIL rc=$?"; fi
  echo "$n: $r ($(tail -1 "$L/$n.log" | cut -c1-100))" | tee -a $R
}
peers() {
  [ -d ../whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    ../whl/*.whl > /dev/null 2>&1
  export PYTHONPATH=/tmp/site
}
if [ "$what" = kernels ] || [ "$what" = tests ]; then
  for x in test_gpu_ops test_attn_decode test_attn_prefill test_gdn_decode test_gdn_prefill test_gemv test_moe \
           test_gpu_sample test_gpu_graphs test_gpu_model test_gpu_engine; do
    [ -x bin/$x ] && t $x 200 bin/$x .
  done
  for x in test_gpu_ops test_attn_decode test_attn_prefill test_gdn_decode test_gdn_prefill test_gemv test_moe \
           test_gpu_sample; do
    [ -x bin/$x ] && GEMV_SMALL_ONLY=1 t memcheck_$x 200 compute-sanitizer --tool memcheck --error-exitcode 3 bin/$x .
  done
  if [ "$what" = kernels ]; then
    for b in bin/bench_*; do
      n=$(basename $b)
      case $n in bench_membw|bench_pool|bench_sched|bench_tok) continue ;; esac
      t $n 120 $b
    done
    peers
    t bench_fla_decode 150 python3 tools/bench_fla.py decode
    t bench_fla_chunk 200 python3 tools/bench_fla.py chunk
    t bench_sdpa 90 python3 tools/bench_attn_sdpa.py
  fi
else
  B="bin/hyserve bench --device cuda --model qwen3.5-9b"
  B1="--input-len 128 --output-len 128 --range-ratio 1 --num-prompts 3 --max-concurrency 1"
  if [ "$what" = e2e-a ]; then
    t e2e_batch1 60 $B $B1
    HS_CUDA_GRAPHS=0 t e2e_batch1_nographs 60 $B $B1
    HS_CUDA_PROF=1 t e2e_batch1_prof 60 $B $B1
    t e2e_seed_f32 280 $B --max-num-batched-tokens 4096
    t e2e_coupled 150 $B --max-num-batched-tokens 4096 --state-layout coupled --num-prompts 128
  else
    t e2e_seed_bf16 260 $B --max-num-batched-tokens 4096 --state-dtype bf16
    peers
    t hf_peer 200 python3 tools/bench_hf.py --config configs/qwen3.5-9b.json --batch 1,16 --input-len 128 \
      --output-len 64
    # the OpenAI server on the GPU (tests/fixtures/gpu-serve), from the repository root
    HYSERVE_BIN=$PWD/bin/hyserve t serve_smoke 150 bash -c "cd ../.. && python3 tools/serve_smoke.py cuda"
  fi
  for f in $L/e2e_*.log; do
    [ -f "$f" ] && echo "== $(basename $f .log): $(grep -E 'total tokens/s|TPOT|roofline' $f | tr -s ' ' | tr '\n' ' ')" >> $R
  done
fi
tar -C $L -czf $OUT/logs.tar.gz . && cp $R $OUT/summary.txt
echo; cat $R
