#!/usr/bin/env bash
# End-to-end conversion benchmark: moepack against `cp -r` of the same bytes
# and against a plain PyTorch conversion, with a warm page cache, plus the
# scale of planning full-size checkpoints. See docs/benchmarks.md.
#
# Usage: bench/convert.sh [--runs N] [--moepack PATH] [--workdir DIR]
#                         [--no-torch] [--no-layers] [--no-scale] [--no-build]
#   --runs N       timed runs of each contestant (default 3); the median is reported
#   --moepack P    binary to measure (default: build/moepack, built Release if needed)
#   --workdir D    where checkpoints are written (default: a new dir in $TMPDIR or /tmp);
#                  needs ~20 GB free; everything generated is deleted on exit
#   --no-torch     skip the PyTorch baseline (its runs are the slowest)
#   --no-layers    skip seconds-per-GB at 1 and 2 layers
#   --no-scale     skip the full-size sparse checkpoints (inspect / dry-run)
#   --no-build     use the binary as it is
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
runs=3
moepack=""
workroot="${TMPDIR:-/tmp}"
torch=1 layers=1 scale=1 build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --moepack) moepack="$2"; shift 2 ;;
    --workdir) workroot="$2"; shift 2 ;;
    --no-torch) torch=0; shift ;;
    --no-layers) layers=0; shift ;;
    --no-scale) scale=0; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "convert.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "convert.sh: --runs wants a positive integer" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "convert.sh: needs GNU time (apt-get install time)" >&2; exit 2; }

if [[ -z "$moepack" ]]; then
  moepack="$repo/build/moepack"
  if [[ $build == 1 ]]; then
    if [[ ! -f "$repo/build/CMakeCache.txt" ]]; then
      cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    fi
    grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$repo/build/CMakeCache.txt" ||
      echo "convert.sh: warning: $repo/build is not a Release build; figures will be off" >&2
    cmake --build "$repo/build" --target moepack -j"$(nproc)" >/dev/null
  fi
fi
moepack="$(realpath "$moepack")"
[[ -x "$moepack" ]] || { echo "convert.sh: no moepack binary at $moepack" >&2; exit 2; }

mkdir -p "$workroot"
work="$(mktemp -d "$workroot/moepack-bench.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_gb=$(( $(df --output=avail -B1 "$work" | tail -1) / 1000000000 ))
if (( free_gb < 22 )); then
  echo "convert.sh: $work has ${free_gb} GB free; the 4-layer runs need about 22 GB" >&2
  exit 1
fi

# ---------------------------------------------------------------- helpers
results="$work/results.txt"   # label seconds rss_kb
: > "$results"

load() { cut -d' ' -f1-3 /proc/loadavg; }

# measure LABEL OUTPUT_DIR cmd...: times cmd, records it, then deletes
# OUTPUT_DIR (untimed; "" keeps the output).
measure() {
  local label="$1" out="$2"; shift 2
  local tf="$work/time.txt" log="$work/cmd.log"
  if ! /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$log" 2>&1; then
    echo "convert.sh: $label failed:" >&2; cat "$log" >&2; exit 1
  fi
  echo "$label $(tail -1 "$tf")" >> "$results"
  if [[ -n "$out" ]]; then rm -rf "$out"; fi
  # Every contestant starts with no dirty pages: otherwise the one after a
  # contestant that did not sync pays for its writeback.
  sync
}

median() {  # median seconds of LABEL
  awk -v l="$1" '$1 == l { print $2 }' "$results" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
peak_mib() {  # largest peak RSS of LABEL, MiB
  awk -v l="$1" '$1 == l && $3 > m { m = $3 } END { printf "%.0f", m / 1024 }' "$results"
}
all_runs() { awk -v l="$1" '$1 == l { printf "%s ", $2 }' "$results"; }
bytes_of() { du -sb --apparent-size "$1" | cut -f1; }
warm() { cat "$1"/* > /dev/null; }

# ---------------------------------------------------------------- machine
echo "== machine"
echo "cpu:    $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "ram:    $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "fs:     $(findmnt -n -o FSTYPE,SOURCE -T "$work") ($work)"
echo "kernel: $(uname -r)"
echo "binary: $moepack"
echo "load:   $(load) (1/5/15 min) at start"
echo

# ---------------------------------------------------------------- 4 layers
synth() {  # synth DIR LAYERS
  "$moepack" synth --preset qwen3-30b-a3b --layers "$2" --max-shard-size 1GB "$1" >/dev/null
}

# One round runs every contestant once, so slow drifts (other jobs, writeback)
# hit all of them alike; outputs are deleted between runs. The two directions
# run in two phases, each with only its own source in the page cache (two
# sources and an output do not fit in RAM at 4 layers), and each direction is
# compared with `cp -r` of its own source.
bench_layers() {  # bench_layers LAYERS WITH_TORCH
  local n="$1" with_torch="$2" src="$work/src$1" fused="$work/fused$1"
  synth "$src" "$n"
  warm "$src"
  local size; size=$(bytes_of "$src")
  echo "$n $size" >> "$work/sizes.txt"
  for ((r = 1; r <= runs; r++)); do
    echo "  L$n per-expert -> fused, run $r/$runs (load $(load))"
    measure "cp$n" "$work/X" cp -r "$src" "$work/X"
    measure "cpsync$n" "$work/X" sh -c 'cp -r "$1" "$2" && sync' sh "$src" "$work/X"
    measure "fused$n" "$work/Y" "$moepack" convert "$src" "$work/Y"
    measure "fusedns$n" "$work/Y" "$moepack" convert --no-sync "$src" "$work/Y"
    if [[ $with_torch == 1 ]]; then
      measure "torch$n" "$work/T" /usr/bin/python3 "$repo/bench/torch_convert.py" "$src" "$work/T"
    fi
  done
  "$moepack" convert "$src" "$fused" >/dev/null
  rm -rf "$src"
  warm "$fused"
  for ((r = 1; r <= runs; r++)); do
    echo "  L$n fused -> per-expert, run $r/$runs (load $(load))"
    measure "cpf$n" "$work/X" cp -r "$fused" "$work/X"
    measure "cpfsync$n" "$work/X" sh -c 'cp -r "$1" "$2" && sync' sh "$fused" "$work/X"
    measure "perexp$n" "$work/Z" "$moepack" convert "$fused" "$work/Z" --to per-expert
    measure "perexpns$n" "$work/Z" "$moepack" convert --no-sync "$fused" "$work/Z" --to per-expert
  done
  rm -rf "$fused"
}

echo "== qwen3-30b-a3b, 4 layers, 1GB source shards: $runs runs each, warm page cache"
bench_layers 4 "$torch"
if [[ $layers == 1 ]]; then
  echo "== qwen3-30b-a3b, 1 and 2 layers (seconds per GB)"
  bench_layers 1 0
  bench_layers 2 0
fi
echo "load:   $(load) at the end of the timed runs"
echo

size4=$(awk '$1 == 4 { print $2 }' "$work/sizes.txt")
torch4=$(median torch4)
row() {  # row NAME LABEL CP_LABEL CP_SYNC_LABEL
  local t; t=$(median "$2")
  awk -v name="$1" -v t="$t" -v cp="$(median "$3")" -v cs="$(median "$4")" -v tr="${torch4:-nan}" -v b="$size4" \
      -v rss="$(peak_mib "$2")" -v all="$(all_runs "$2")" \
    'BEGIN { vt = (tr == "nan" || tr == "") ? "-" : sprintf("%.1fx", tr / t);
             printf "  %-32s %8.2f s %7.2f GB/s %7.2fx %9.2fx %11s %9s MiB   runs: %s\n", name, t, b / t / 1e9, t / cp, t / cs, vt, rss, all }'
}
echo "== results: 4 layers, $(awk -v b="$size4" 'BEGIN { printf "%.2f GB", b / 1e9 }'), median of $runs"
printf "  %-32s %10s %12s %8s %10s %11s %13s\n" "" "median" "throughput" "vs cp -r" "vs cp -r" "faster than" "peak RSS"
printf "  %-32s %10s %12s %8s %10s %11s %13s\n" "" "" "" "of its" "&& sync" "torch" ""
printf "  %-32s %10s %12s %8s %10s %11s %13s\n" "" "" "" "source" "" "" ""
row "cp -r SRC" cp4 cp4 cpsync4
row "cp -r SRC && sync" cpsync4 cp4 cpsync4
row "moepack convert (to fused)" fused4 cp4 cpsync4
row "  the same, --no-sync" fusedns4 cp4 cpsync4
[[ $torch == 1 ]] && row "PyTorch (to fused)" torch4 cp4 cpsync4
row "cp -r FUSED" cpf4 cpf4 cpfsync4
row "cp -r FUSED && sync" cpfsync4 cpf4 cpfsync4
row "moepack convert --to per-expert" perexp4 cpf4 cpfsync4
row "  the same, --no-sync" perexpns4 cpf4 cpfsync4
echo

if [[ $layers == 1 ]]; then
  echo "== seconds per GB (median), peak RSS"
  printf "  %-7s %7s %11s %11s %11s %16s %11s %11s\n" layers GB "cp SRC s/GB" "fused s/GB" "cp FUSED" "per-expert s/GB" "fused RSS" "p-e RSS"
  for n in 1 2 4; do
    b=$(awk -v n=$n '$1 == n { print $2 }' "$work/sizes.txt")
    awk -v n=$n -v b="$b" -v c="$(median cp$n)" -v f="$(median fused$n)" -v cf="$(median cpf$n)" -v p="$(median perexp$n)" \
        -v rf="$(peak_mib fused$n)" -v rp="$(peak_mib perexp$n)" \
      'BEGIN { g = b / 1e9; printf "  %-7s %7.2f %11.3f %11.3f %11.3f %16.3f %7s MiB %7s MiB\n", n, g, c / g, f / g, cf / g, p / g, rf, rp }'
  done
  echo
fi

# ---------------------------------------------------------------- scale
if [[ $scale == 1 ]]; then
  echo "== full-size checkpoints, sparse (file holes): inspect and plan (convert --dry-run), median of $runs"
  scale_case() {  # scale_case KEY DESCRIPTION PRESET LAYOUT CONVERT_ARGS...
    local key="$1" what="$2" preset="$3" layout="$4"; shift 4
    local dir="$work/sparse"
    "$moepack" synth --preset "$preset" --layout "$layout" --sparse "$dir" >/dev/null
    local shards; shards=$(find "$dir" -name '*.safetensors' | wc -l)
    local logical; logical=$(bytes_of "$dir")
    for ((r = 1; r <= runs; r++)); do
      measure "inspect-$key" "" "$moepack" inspect "$dir"
      measure "plan-$key" "" "$moepack" convert --dry-run "$dir" "$@"
    done
    awk -v n="$what" -v g="$logical" -v s="$shards" -v ti="$(median "inspect-$key")" -v tp="$(median "plan-$key")" \
        -v ri="$(peak_mib "inspect-$key")" -v rp="$(peak_mib "plan-$key")" \
      'BEGIN { printf "  %-34s %5.0f GB %4d shards   inspect %6.2f s %5s MiB   dry-run %6.2f s %5s MiB\n", n, g / 1e9, s, ti, ri, tp, rp }'
    rm -rf "$dir"
  }
  scale_case ds-fuse "deepseek-v3 per-expert -> fused" deepseek-v3 per-expert
  scale_case ds-split "deepseek-v3 fused -> per-expert" deepseek-v3 fused --to per-expert
  scale_case qw-fuse "qwen3-30b-a3b per-expert -> fused" qwen3-30b-a3b per-expert
  scale_case qw-split "qwen3-30b-a3b fused -> per-expert" qwen3-30b-a3b fused --to per-expert
  echo "  targets: < 10 s and < 1024 MiB each"
  echo
fi
echo "load:   $(load) at the end"
