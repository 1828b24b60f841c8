#!/usr/bin/env bash
# Installs what hyserve needs on a fresh Debian 12 machine (idempotent).
# C libraries come from Debian packages only; Python packages (tools and
# end-to-end tests only) from PyPI. Runs apt-get only when something is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libjansson-dev libxxhash-dev libpcre2-dev libutf8proc-dev
      libmicrohttpd-dev libcmocka-dev libopenblas-dev python3 python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Python packages used by tests/e2e and tools (only what is missing).
py=python3
need=()
for m in openai:openai tokenizers:tokenizers pytest:pytest; do
  mod=${m%%:*}; pkg=${m##*:}
  $py -c "import $mod" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: pip installing ${need[*]}"
  $py -m pip install -q "${need[@]}" || $py -m pip install -q --break-system-packages "${need[@]}"
fi
