#!/usr/bin/env bash
# Installs the system packages Ordinal's build and tests need, if they are missing:
# a C++ toolchain and libclang (RocksDB's C++ build and bindgen), and promtool (metrics checks).
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail
missing=()
command -v c++ >/dev/null 2>&1 || missing+=(build-essential)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/*/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# promtool is optional: if the prometheus package is unavailable, the metrics test says so and skips.
$sudo apt-get install -y -q --no-install-recommends build-essential libclang-dev
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  $sudo apt-get install -y -q --no-install-recommends prometheus || echo "prometheus (promtool) not installed"
fi
