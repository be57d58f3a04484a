#!/usr/bin/env bash
# Installs what is missing, builds moepack (Release) into build/, makes a
# sample Qwen3-MoE checkpoint and runs the main job on it: inspect, convert
# to the transformers v5 fused layout, verify, and convert back.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh release >/dev/null
M=build/moepack
work="$(mktemp -d "${TMPDIR:-/tmp}/moepack-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "1. a synthetic Qwen3-MoE checkpoint (per-expert, as on the Hub; experts straddle shards)" \
  $M synth "$work/qwen3" --model-type qwen3_moe --layers 4 --experts 16 --hidden 256 --intermediate 128 \
  --max-shard-size 1MB --seed 7
step "2. what it holds" $M inspect "$work/qwen3"
step "3. plan the conversion without writing" $M convert "$work/qwen3" "$work/fused" --dry-run
step "4. convert to the v5 fused layout" $M convert "$work/qwen3" "$work/fused"
step "5. the fused checkpoint" $M inspect "$work/fused"
step "6. prove it holds the same bytes" $M verify "$work/qwen3" "$work/fused"
step "7. convert back to per-expert" $M convert "$work/fused" "$work/back" --to per-expert --max-shard-size 1MB
step "8. prove the round trip" $M verify "$work/qwen3" "$work/back"
printf '\nThe demo converted %s and back; every tensor verified by XXH3-128 hashes.\n' "$work/qwen3"
