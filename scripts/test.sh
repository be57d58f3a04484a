#!/usr/bin/env bash
# Installs what is missing, builds (Release and ASan+UBSan) and runs every
# test through ctest, then the Python package's pytest suite. Exit status is
# non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh release
scripts/build.sh asan

echo "== tests (Release) =="
ctest --test-dir build --output-on-failure -j"$(nproc)"

echo "== Python package (pytest) =="
cmake -S . -B build -DMOEPACK_PYTHON=ON >/dev/null
cmake --build build -j"$(nproc)" --target moepack_python
PYTHONPATH="$PWD/build/python" MOEPACK_BINARY="$PWD/build/moepack" /usr/bin/python3 -m pytest -q -p no:cacheprovider python/tests

echo "== tests (ASan + UBSan) =="
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-asan --output-on-failure -j"$(nproc)"

echo "== fuzz targets, briefly (clang-14: libFuzzer + ASan + UBSan) =="
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEPACK_FUZZ=ON \
  -DMOEPACK_TESTS=OFF -DMOEPACK_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target moepack_fuzz
ctest --test-dir build-fuzz/fuzz --output-on-failure -j"$(nproc)"
