#!/usr/bin/env bash
# Checks that two moepack binaries write byte-identical output: every
# built-in family at the tiny preset (its Hub layout and the fused one, BF16
# and FP8), plus slices of the named presets, converted both ways by each
# binary. Usage: scripts/compare_binaries.sh OLD_BINARY NEW_BINARY [WORKDIR]
# For refactors that must not change behaviour; prints one line per case and
# exits non-zero on the first difference.
set -euo pipefail
old="$1"; new="$2"; work="${3:-$(mktemp -d)}"
mkdir -p "$work"
tree_hash() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }
run_case() {  # name, synth flags...
  local name="$1"; shift
  local src="$work/$name-src"
  rm -rf "$src"
  "$old" synth "$src" "$@" >/dev/null
  local result=""
  for to in fused per-expert; do
    local h=()
    for bin in "$old" "$new"; do
      rm -rf "$work/out"
      if "$bin" convert "$src" "$work/out" --to "$to" --no-sync >/dev/null 2>"$work/err"; then
        h+=("$(tree_hash "$work/out")")
      else
        h+=("error:$(head -c 200 "$work/err")")
      fi
    done
    if [ "${h[0]}" != "${h[1]}" ]; then
      echo "DIFFERENT $name --to $to: old ${h[0]} new ${h[1]}"; exit 1
    fi
    result="$result $to=${h[0]:0:16}"
  done
  echo "same $name:$result"
  rm -rf "$src" "$work/out"
}
families=$("$old" synth --help | sed -n 's/.*Model family: //p' | tr -d ',')
for f in $families; do
  for dtype in bf16 fp8; do
    run_case "$f-$dtype" --model-type "$f" --dtype "$dtype"
    run_case "$f-$dtype-fused" --model-type "$f" --dtype "$dtype" --layout fused --seed 5
  done
done
run_case qwen3_vl_moe-transposed --model-type qwen3_vl_moe --layout fused-transposed
run_case qwen3-30b-a3b --preset qwen3-30b-a3b --layers 1 --experts 16 --max-shard-size 50MB
run_case deepseek-v3 --preset deepseek-v3 --layers 4 --experts 8 --max-shard-size 200MB
run_case mixtral-8x7b --preset mixtral-8x7b --layers 1 --experts 4 --max-shard-size 300MB
echo "all cases identical"
