#!/usr/bin/env bash
# The whole CPU test suite, as CI runs it (README: "Test"):
#   1. install what is missing (scripts/setup.sh)
#   2. build with warnings as errors (CUDA backend too when nvcc exists) and run ctest
#   3. build again under ASan + UBSan (CPU only) and run ctest
#   4. build the libFuzzer harnesses with clang and run each briefly
#   5. end-to-end tests (tests/e2e, pytest) against the built binary
# Environment: JOBS (default: nproc), FUZZ_SECONDS (default 30 per harness, 0 skips).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

echo "== build (warnings are errors)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS"
echo "== tests"
ctest --test-dir build --output-on-failure -j "$JOBS"

echo "== tests under ASan + UBSan"
cmake -S . -B build-san -DHYSERVE_SANITIZE=ON -DHYSERVE_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-san -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1 HS_SANITIZED=1 ctest --test-dir build-san --output-on-failure -j "$JOBS"

if [ "$FUZZ_SECONDS" != 0 ] && ls fuzz/fuzz_*.c >/dev/null 2>&1; then
  echo "== fuzzers (${FUZZ_SECONDS}s each)"
  CC=clang cmake -S . -B build-fuzz -DHYSERVE_FUZZ=ON -DHYSERVE_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build-fuzz -j "$JOBS"
  for f in build-fuzz/fuzz/fuzz_*; do
    name=$(basename "$f")
    corpus=build-fuzz/corpus-$name; mkdir -p "$corpus"
    seeds=fuzz/seeds/${name#fuzz_}
    [ -d "$seeds" ] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    echo "-- $name"
    "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 "$corpus" 2>&1 | tail -n 2
  done
fi

if ls tests/e2e/test_*.py >/dev/null 2>&1; then
  echo "== end-to-end tests"
  HYSERVE_BIN=$PWD/build/hyserve python3 -m pytest -q tests/e2e
fi
echo "== all tests passed"
