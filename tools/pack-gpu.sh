#!/usr/bin/env bash
# pack-gpu: bundle what a GPU run needs into .gpu/eng (git-ignored) so the device tool
# can carry it: the CUDA build's binaries (stripped), the shared libraries they need
# that a bare CUDA image lacks (xz-compressed: OpenBLAS alone is 35 MB; the binaries
# too, unpacked by env.sh), the shipped
# configs, the GPU fixtures and tools/gpu-check.sh. On the device:
#   bash .gpu/eng/env.sh <command>      (unpacks the libraries, sets the paths, runs it)
# e.g. `bash .gpu/eng/env.sh ./bin/test_gpu_ops .` or
#      `bash .gpu/eng/env.sh ./bin/hyserve bench --device cuda --model qwen3.5-9b`.
# Usage: tools/pack-gpu.sh [build-dir]   (default build-cuda; configured and built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-cuda}
if [ ! -x "$B/hyserve" ]; then
  cmake -S . -B "$B" -DHYSERVE_CUDA=ON >/dev/null
  cmake --build "$B" -j "$(nproc)"
fi
E=.gpu/eng
rm -rf "$E" && mkdir -p "$E/bin" "$E/tests/fixtures" "$E/tools"
cp "$B/hyserve" "$B"/gpu/* "$E/bin/"
cp "$B"/bench/bench_* "$E/bin/" 2>/dev/null || true
strip "$E"/bin/* 2>/dev/null || true
cp -r configs "$E/"
cp -r tests/fixtures/gpu-dense tests/fixtures/gpu-moe "$E/tests/fixtures/"
cp tools/gpu-check.sh tools/bench_fla.py tools/bench_hf.py bench/*.py "$E/tools/"
cp tools/gpu-all.sh tools/gpu-final.sh "$E/"
tmp=$(mktemp -d)
mkdir -p "$tmp/lib"
for f in "$E"/bin/*; do ldd "$f" 2>/dev/null || true; done | awk '/=>/ {print $3}' | sort -u |
  grep -v -E 'libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libstdc\+\+|libgcc_s|cuda|not$' |
  while read -r l; do [ -f "$l" ] && cp -L "$l" "$tmp/lib/"; done
tar -C "$tmp" -cJf "$E/lib.tar.xz" lib
rm -rf "$tmp"
# the binaries carry every kernel for sm_90a (16 MB each): xz brings them to ~1/10
tar -C "$E" -cJf "$E/bin.tar.xz" bin && rm -rf "$E/bin"
cat > "$E/env.sh" <<'ENV'
#!/bin/bash
cd "$(dirname "$0")"
[ -d bin ] || tar xJf bin.tar.xz
mkdir -p /tmp/englib && tar xJf lib.tar.xz -C /tmp/englib
export LD_LIBRARY_PATH=/tmp/englib/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export HYSERVE_CONFIG_DIR=$PWD/configs PYTHONUNBUFFERED=1
exec "$@"
ENV
chmod +x "$E/env.sh"
du -sh "$E"
echo "carry [\".gpu/eng\"]; run e.g.: bash .gpu/eng/env.sh ./bin/test_gpu_ops ."
