#!/usr/bin/env bash
# Dequantizing conversion benchmark: `moepack convert --dtype bf16` of a
# DeepSeek-V3-shaped FP8 checkpoint (real shapes: H 7168, expert width 2048,
# dense width 18432, 128x128 block scales; a slice of the layers and
# experts) against `cp -r` of a BF16 checkpoint of the output's size and
# against the same dequantization written with torch on the CPU
# (bench/torch_convert.py --dtype bf16), in one run. See docs/benchmarks.md.
#
# Usage: bench/dequant.sh [--runs N] [--layers L] [--experts E] [--moepack PATH] [--workdir DIR] [--no-torch]
#   --runs N       timed runs of each contestant (default 3); the median is reported
#   --layers L     layers of the preset (default 5: 3 dense, 2 MoE)
#   --experts E    routed experts per MoE layer (default 16)
#   --moepack P    binary to measure (default: build/moepack, as it is)
#   --workdir D    where checkpoints are written (default: $TMPDIR or /tmp); deleted on exit
#   --no-torch     skip the torch baseline
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
runs=3 layers=5 experts=16 torch=1
moepack="$repo/build/moepack"
workroot="${TMPDIR:-/tmp}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --layers) layers="$2"; shift 2 ;;
    --experts) experts="$2"; shift 2 ;;
    --moepack) moepack="$2"; shift 2 ;;
    --workdir) workroot="$2"; shift 2 ;;
    --no-torch) torch=0; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dequant.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x /usr/bin/time ]] || { echo "dequant.sh: needs GNU time (apt-get install time)" >&2; exit 2; }
[[ -x "$moepack" ]] || { echo "dequant.sh: no moepack binary at $moepack (scripts/build.sh)" >&2; exit 2; }
mkdir -p "$workroot"
work="$(mktemp -d "$workroot/moepack-dequant.XXXXXX")"
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

results="$work/results.txt"
: > "$results"
measure() {  # measure LABEL OUTPUT_DIR cmd...
  local label="$1" out="$2"; shift 2
  if ! /usr/bin/time -f '%e %M %U %S' -o "$work/time.txt" "$@" >"$work/cmd.log" 2>&1; then
    echo "dequant.sh: $label failed:" >&2; cat "$work/cmd.log" >&2; exit 1
  fi
  echo "$label $(tail -1 "$work/time.txt")" >> "$results"
  rm -rf "$out"
  sync
}
median() {
  awk -v l="$1" '$1 == l { print $2 }' "$results" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
peak_mib() { awk -v l="$1" '$1 == l && $3 > m { m = $3 } END { printf "%.0f", m / 1024 }' "$results"; }
# CPU seconds (user + system) of the run whose wall time is the median.
median_cpu() {
  local t; t=$(median "$1")
  awk -v l="$1" -v t="$t" '$1 == l { d = $2 - t; if (d < 0) d = -d; if (!seen || d < best) { best = d; c = $4 + $5; seen = 1 } } END { printf "%.1f", c }' "$results"
}
all_runs() { awk -v l="$1" '$1 == l { printf "%s ", $2 }' "$results"; }
bytes_of() { du -sb --apparent-size "$1" | cut -f1; }

echo "== machine"
echo "cpu:    $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "ram:    $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "fs:     $(findmnt -n -o FSTYPE,SOURCE -T "$work")"
echo "binary: $moepack"
echo

preset=(--preset deepseek-v3 --layers "$layers" --experts "$experts" --max-shard-size 2GB)
"$moepack" synth "$work/fp8" "${preset[@]}" --dtype fp8 >/dev/null
# The copy baseline: a BF16 checkpoint of the same model, the size of the output.
"$moepack" synth "$work/bf16" "${preset[@]}" --dtype bf16 --layout fused >/dev/null
src=$(bytes_of "$work/fp8") out=$(bytes_of "$work/bf16")
echo "== deepseek-v3 shapes, $layers layers, $experts experts: FP8 source $(awk -v b="$src" 'BEGIN { printf "%.2f GB", b / 1e9 }'), BF16 output $(awk -v b="$out" 'BEGIN { printf "%.2f GB", b / 1e9 }'); $runs runs, warm sources"
for ((r = 1; r <= runs; r++)); do
  echo "  run $r/$runs (load $(cut -d' ' -f1-3 /proc/loadavg))"
  cat "$work/bf16"/* > /dev/null
  measure cp "$work/X" cp -r "$work/bf16" "$work/X"
  measure cpsync "$work/X" sh -c 'cp -r "$1" "$2" && sync' sh "$work/bf16" "$work/X"
  cat "$work/fp8"/* > /dev/null
  measure moepack "$work/Y" "$moepack" convert "$work/fp8" "$work/Y" --dtype bf16
  measure moepackns "$work/Y" "$moepack" convert --no-sync "$work/fp8" "$work/Y" --dtype bf16
  if [[ $torch == 1 ]]; then
    measure torch "$work/T" /usr/bin/python3 "$repo/bench/torch_convert.py" "$work/fp8" "$work/T" --dtype bf16
  fi
done
echo

cp_t=$(median cp) cps_t=$(median cpsync) torch_t=$( [[ $torch == 1 ]] && median torch || echo nan)
torch_c=$( [[ $torch == 1 ]] && median_cpu torch || echo nan)
row() {  # row NAME LABEL
  local t; t=$(median "$2")
  awk -v n="$1" -v t="$t" -v cp="$cp_t" -v cs="$cps_t" -v tr="$torch_t" -v b="$out" -v rss="$(peak_mib "$2")" -v all="$(all_runs "$2")" \
      -v c="$(median_cpu "$2")" -v tc="$torch_c" \
    'BEGIN { vt = (tr == "nan") ? "-" : sprintf("%.1fx", tr / t);
             vc = (tc == "nan" || c == 0) ? "-" : sprintf("%.1fx", tc / c);
             printf "  %-38s %7.2f s %6.2f GB/s %7.2fx %9.2fx %9s %7s MiB %7.1f s %9s   runs: %s\n", n, t, b / t / 1e9, t / cp, t / cs, vt, rss, c, vc, all }'
}
echo "== results, median of $runs (GB/s of BF16 output)"
printf "  %-38s %9s %11s %8s %10s %9s %11s %9s %9s\n" "" "median" "throughput" "vs cp -r" "vs cp&sync" "vs torch" "peak RSS" "CPU" "CPU/torch"
row "cp -r BF16 (output-sized)" cp
row "cp -r BF16 && sync" cpsync
row "moepack convert --dtype bf16" moepack
row "  the same, --no-sync" moepackns
[[ $torch == 1 ]] && row "torch on the CPU (torch_convert.py)" torch
echo
echo "goals (issue 13): moepack within 1.3x of the copy, >= 20x faster than torch, peak RSS flat in model size"
echo "(CPU: user + system seconds of the median run; CPU/torch: torch's CPU seconds over the row's, the work each spends on the same dequantization)"
