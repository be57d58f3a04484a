#!/usr/bin/env bash
# Builds moepack. Usage: scripts/build.sh [release|asan] (default release).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
moepack_install_deps
kind="${1:-release}"
jobs="$(nproc)"
case "$kind" in
  release)
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j"$jobs"
    ;;
  asan)
    # -O1 and line tables: what ASan's reports need, and much quicker to
    # build than -O2 with full debug info.
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
      -DMOEPACK_SANITIZE=ON -DMOEPACK_BENCH=OFF >/dev/null
    cmake --build build-asan -j"$jobs"
    ;;
  *) echo "usage: $0 [release|asan]" >&2; exit 2 ;;
esac
