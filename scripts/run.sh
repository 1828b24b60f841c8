#!/usr/bin/env bash
# The main job, as the README's first command runs it: install what is missing
# (scripts/setup.sh), build, and run hyserve. For now the job is the capacity
# planner on the seed's case (Qwen3.5-397B-A17B-FP8, tp 4, fp8 KV, bf16 state, MI355X);
# the server issue turns this into starting the server.
# Extra arguments go to `hyserve plan` (e.g. --json, --mtp 3; a later option overrides an earlier one).
# Environment: JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
JOBS=${JOBS:-$(nproc)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS" >/dev/null
exec ./build/hyserve plan --model qwen3.5-397b-a17b --tp 4 --kv-dtype fp8 --state-dtype bf16 --gpu mi355x-288g \
  --weights-dtype fp8 "$@"
