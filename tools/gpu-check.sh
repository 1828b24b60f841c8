#!/bin/bash
# gpu-check: the whole GPU check from a prebuilt build folder, on a machine with an
# NVIDIA Hopper GPU. Runs every test program in <build>/gpu (each prints its errors by
# norm and exits non-zero on failure), optionally the benchmarks in <build>/bench and
# the fla peer (tools/bench_fla.py, needs flash-linear-attention importable), and prints
# a short table last.
#   tools/gpu-check.sh [build_dir] [--bench] [--fla] [--sanitize]
# --sanitize runs each kernel/op test under compute-sanitizer memcheck as well.
# Logs go to $OUT (when set) or <build>/gpu-check/.
set -u
BUILD=build
BENCH=0; FLA=0; SAN=0
for a in "$@"; do
  case "$a" in
    --bench) BENCH=1 ;;
    --fla) FLA=1 ;;
    --sanitize) SAN=1 ;;
    *) BUILD="$a" ;;
  esac
done
HERE="$(cd "$(dirname "$0")/.." && pwd)"
LOG="${OUT:-$BUILD/gpu-check}"
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 > "$LOG/card.txt" || true
declare -a NAMES RESULTS
for t in "$BUILD"/gpu/test_*; do
  [ -x "$t" ] || continue
  n=$(basename "$t")
  if "$t" > "$LOG/$n.log" 2>&1; then r=pass; else r=FAIL; fi
  # memcheck on the kernel and op tests; the whole-model and engine tests run
  # thousands of launches and take too long under it
  if [ $SAN = 1 ] && [[ "$n" != test_gpu_model && "$n" != test_gpu_engine && "$n" != test_gpu_graphs ]]; then
    if compute-sanitizer --tool memcheck --error-exitcode 3 "$t" > "$LOG/$n.memcheck.log" 2>&1; then r="$r, memcheck clean"; else r="$r, MEMCHECK FAIL"; fi
  fi
  NAMES+=("$n"); RESULTS+=("$r ($(tail -1 "$LOG/$n.log"))")
done
if [ $BENCH = 1 ]; then
  for b in "$BUILD"/bench/bench_*; do
    [ -x "$b" ] || continue
    n=$(basename "$b")
    case "$n" in bench_membw|bench_pool|bench_sched|bench_tok) continue ;; esac  # CPU benches
    if "$b" > "$LOG/$n.log" 2>&1; then r=ran; else r=FAIL; fi
    NAMES+=("$n"); RESULTS+=("$r (log $LOG/$n.log)")
  done
fi
if [ $FLA = 1 ]; then
  if PYTHONUNBUFFERED=1 python3 "$HERE/tools/bench_fla.py" all > "$LOG/bench_fla.log" 2>&1; then r=ran; else r=FAIL; fi
  NAMES+=("bench_fla"); RESULTS+=("$r (log $LOG/bench_fla.log)")
fi
echo
echo "GPU check on $(cat "$LOG/card.txt" 2>/dev/null)"
printf '%-20s %s\n' "program" "result"
fail=0
for i in "${!NAMES[@]}"; do
  printf '%-20s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}"
  case "${RESULTS[$i]}" in *FAIL*) fail=1 ;; esac
done
exit $fail
