#!/usr/bin/env bash
# The main job, as the README's first command runs it: install what is missing
# (scripts/setup.sh), build, start `hyserve serve` on the embedded default model and
# send it one chat request and one streaming completion with curl.
#
# The default model is a tiny fixture with random weights (tests/fixtures/tiny,
# --load-format dummy, the Qwen3 tokenizer in tests/data/qwen3-tokenizer): the
# server, the API and the engine are real, the generated text is not meaningful.
#
#   bash scripts/run.sh            start, send the requests, stop (SIGTERM) and exit
#   bash scripts/run.sh --serve    start, send the requests, keep serving until Ctrl-C
# Other arguments go to `hyserve serve` (e.g. --model DIR --tokenizer DIR, --api-key K).
# Environment: PORT (default 8000), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
JOBS=${JOBS:-$(nproc)}
PORT=${PORT:-8000}
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS" >/dev/null

serve=0
args=()
for a in "$@"; do
  if [ "$a" = "--serve" ]; then serve=1; else args+=("$a"); fi
done

./build/hyserve serve --model tests/fixtures/tiny --load-format dummy \
  --tokenizer tests/data/qwen3-tokenizer --served-model-name tiny-random \
  --host 127.0.0.1 --port "$PORT" --max-model-len 2048 "${args[@]}" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do  # up to 30 s for the model to load
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "run.sh: the server exited" >&2; exit 1; }
  sleep 0.1
done

echo "== POST /v1/chat/completions (tiny random model: the text is not meaningful)"
curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -H "Content-Type: application/json" -d '{
  "model": "tiny-random",
  "messages": [{"role": "user", "content": "Hello! What can you do?"}],
  "max_tokens": 16, "temperature": 0
}'
echo
echo "== POST /v1/completions, streaming"
curl -sN "http://127.0.0.1:$PORT/v1/completions" -H "Content-Type: application/json" -d '{
  "model": "tiny-random", "prompt": "Once upon a time", "max_tokens": 8, "stream": true
}'

if [ "$serve" = 1 ]; then
  echo "== serving on http://127.0.0.1:$PORT (Ctrl-C stops)"
  trap 'kill -TERM $pid 2>/dev/null || true' INT TERM  # a background job ignores SIGINT: forward it
  wait $pid || true
  wait $pid 2>/dev/null || true
  trap - EXIT
fi
