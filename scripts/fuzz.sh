#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 60) over its corpus.
#   scripts/fuzz.sh [SECONDS]    fuzz every target in turn
#   scripts/fuzz.sh --seeds      regenerate the seed inputs in fuzz/corpus/
# Builds build-fuzz (clang-14, ASan + UBSan + libFuzzer) first. New inputs go
# to build-fuzz/fuzz/work/<target>/corpus; a crash input is written to
# build-fuzz/fuzz/work/<target>/artifacts/ and the script exits non-zero.
# Once the bug is fixed, copy the crash input into fuzz/corpus/<target>/ so
# that every later run (and ctest) replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
moepack_install_deps

targets=(header index config rules plan)
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEPACK_FUZZ=ON \
  -DMOEPACK_TESTS=OFF -DMOEPACK_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target moepack_fuzz

if [ "${1:-}" = "--seeds" ]; then
  for t in header index config plan; do
    mkdir -p "fuzz/corpus/$t"
    MOEPACK_FUZZ_WRITE_SEEDS="fuzz/corpus/$t" "build-fuzz/fuzz/fuzz_$t"
  done
  cmake --build build-fuzz -j"$(nproc)" --target moepack
  mkdir -p fuzz/corpus/rules
  cp rules/*.json fuzz/corpus/rules/
  # config.json of every built-in family, as synth writes them.
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  for fam in $(sed -n 's/^.*--model-type TEXT *Model family: //p' <(build-fuzz/moepack synth --help) | tr -d ','); do
    build-fuzz/moepack synth "$tmp/$fam" --model-type "$fam" --layers 1 --experts 4 --hidden 8 --intermediate 4 \
      >/dev/null && cp "$tmp/$fam/config.json" "fuzz/corpus/config/synth_$fam.json"
  done
  echo "seeds written to fuzz/corpus/"
  exit 0
fi

seconds="${1:-60}"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=()
for t in "${targets[@]}"; do
  work="build-fuzz/fuzz/work/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  echo "== fuzz_$t: ${seconds}s =="
  if ! "build-fuzz/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2560 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus" "fuzz/corpus/$t" 2>"$work/log"; then
    failed+=("$t")
    tail -n 60 "$work/log"
  else
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" "$work/log" || true
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]} (inputs in build-fuzz/fuzz/work/<target>/artifacts/)" >&2
  exit 1
fi
echo "fuzz: no crashes"
