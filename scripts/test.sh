#!/usr/bin/env bash
# Installs what is missing, builds (Release, and ASan+UBSan with the fuzz
# targets) and runs every test through ctest, the Python package's pytest
# suite and a short run of each fuzz target. Exit status is
# non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
moepack_install_deps  # once, before the builds run side by side (apt locks)

# The two trees build side by side: each has stretches that keep one core
# busy (a link, the last unity batch, the Python module), which the other
# tree fills. The sanitizer tree's output goes to a log, shown if it fails.
mkdir -p build-asan
setsid scripts/build.sh asan >build-asan/build.log 2>&1 &  # its own process group, to stop it whole
asan_build=$!
trap '[ -z "$asan_build" ] || kill -- -"$asan_build" 2>/dev/null || true' EXIT
scripts/build.sh release
cmake -S . -B build -DMOEPACK_PYTHON=ON >/dev/null
cmake --build build -j"$(nproc)" --target moepack_python
if ! wait "$asan_build"; then
  asan_build=""
  tail -n 60 build-asan/build.log
  echo "scripts/build.sh asan failed (whole log: build-asan/build.log)" >&2
  exit 1
fi
asan_build=""

echo "== tests (Release) =="
ctest --test-dir build --output-on-failure -j"$(nproc)"

echo "== Python package (pytest) =="
PYTHONPATH="$PWD/build/python" MOEPACK_BINARY="$PWD/build/moepack" /usr/bin/python3 -m pytest -q -p no:cacheprovider python/tests

echo "== tests (ASan + UBSan, clang-14, 8 shards), then the fuzz targets briefly (libFuzzer) =="
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-asan --output-on-failure -j"$(nproc)"
