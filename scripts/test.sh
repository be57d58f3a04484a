#!/usr/bin/env bash
# Installs what is missing, builds (Release and ASan+UBSan) and runs every
# test through ctest. Exit status is non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh release
scripts/build.sh asan

echo "== tests (Release) =="
ctest --test-dir build --output-on-failure -j"$(nproc)"

echo "== tests (ASan + UBSan) =="
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-asan --output-on-failure -j"$(nproc)"
