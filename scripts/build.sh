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
    # clang-14, ASan + UBSan: the unit tests and the libFuzzer targets in one
    # tree, so the library is compiled once for both (it carries the
    # fuzzer's coverage instrumentation, which the tests do not mind).
    # -O1 and line tables: what the sanitizers' reports need, and much
    # quicker to build than -O2 with full debug info.
    CC=clang-14 CXX=clang++-14 cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" -DMOEPACK_SANITIZE=ON -DMOEPACK_FUZZ=ON \
      -DMOEPACK_BENCH=OFF >/dev/null
    cmake --build build-asan -j"$jobs"
    ;;
  *) echo "usage: $0 [release|asan]" >&2; exit 2 ;;
esac
