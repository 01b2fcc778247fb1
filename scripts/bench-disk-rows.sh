#!/usr/bin/env bash
# The rows of issue 10's disk target: weights on disk (O_DIRECT), cache and activations in memory, decode token/s at
# several effective batches against the bounds `bench` prints (the compute's, the disk's, the compute's beside the
# disk's reads) and against the disk as the run got it. A manual benchmark, not a test: run it on a quiet machine (load
# below 1) and read the efficiencies, not the absolute speeds.
#
#   scripts/bench-disk-rows.sh [--model opt-1.3b] [--dtypes "float32 bfloat16"] [--blocks "1x1 4x1 8x2 32x2 64x4"]
#                              [--repeats 1] [--prompt-len 16] [--gen-len 8] [--hardware FILE] [--compute-threads N]
#
# Each block is gpu-batch-size x num-gpu-batches (the effective batch is their product). Columns: decode token/s; the
# bounds (token/s) from the hardware profile (--hardware, else this machine's cached one); eff: measured / the tightest
# of them (bench's efficiency line); disk_GB/s and eff_run: the disk tier's read rate over its busy time and measured /
# what that busy time allows (near 1: the disk as it ran that minute was the bound). A virtual disk's speed moves
# within minutes, and a profile's span (dtoc_span_bytes) shorter than a step's reads gives an optimistic disk bound:
# `flexgen profile --disk-span-gb N` measures a longer one.
set -euo pipefail
# shellcheck source=bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

model=opt-1.3b
dtypes="float32 bfloat16"
blocks="1x1 4x1 8x2 32x2 64x4"
repeats=1
prompt=16
gen=8
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --dtypes) dtypes="$2"; shift 2 ;;
    --blocks) blocks="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --prompt-len) prompt="$2"; shift 2 ;;
    --gen-len) gen="$2"; shift 2 ;;
    --hardware) extra+=(--hardware "$2"); shift 2 ;;
    --compute-threads) extra+=(--compute-threads "$2"); shift 2 ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for b in $blocks; do
  bench_check_block "$b"
done

bench_flexgen

# "decode disk compute beside eff disk_rate eff_run" of one run.
run_row() {
  local out
  if ! out="$(dotnet "$flexgen" bench --model "$model" --path _DUMMY_ --percent 0 0 100 0 100 0 \
      --gpu-batch-size "$2" --num-gpu-batches "$3" --prompt-len "$prompt" --gen-len "$gen" --compute-dtype "$1" \
      --no-log "${extra[@]}" 2>&1)"; then
    echo "bench failed ($1, $2 x $3):" >&2
    echo "$out" | tail -5 >&2
    echo "nan - - - nan - -"
    return
  fi
  echo "$out" | awk '
    function after(line, name,   s) { s = line; if (!match(s, name " [0-9.]+|" name " -")) return "-"; s = substr(s, RSTART + length(name) + 1, RLENGTH - length(name) - 1); return s }
    /^decode latency/ {d = $7}
    /^  decode: +bound/ {disk = after($0, "disk->cpu"); comp = after($0, "compute"); beside = after($0, "compute beside disk reads");
                         for (i = 1; i <= NF; i++) if ($i == "efficiency") e = $(i + 1)}
    /^  decode: +read/ {for (i = 1; i <= NF; i++) { if ($i == "GB/s") r = $(i - 1); if ($i == "efficiency") er = $(i + 1) } }
    END {print (d == "" ? "nan" : d), (disk == "" ? "-" : disk), (comp == "" ? "-" : comp), (beside == "" ? "-" : beside),
               (e == "" ? "nan" : e), (r == "" ? "-" : r), (er == "" ? "-" : er)}'
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %-9s %6s %-4s %10s %9s %9s %9s %7s %10s %8s\n' \
  dtype block batch run decode disk_bnd comp_bnd beside eff disk_GB/s eff_run
for dtype in $dtypes; do
  for b in $blocks; do
    g="${b%x*}" n="${b#*x}"
    for r in $(seq "$repeats"); do
      read -r d disk comp beside e rate er < <(run_row "$dtype" "$g" "$n")
      printf '%-9s %-9s %6d %-4s %10s %9s %9s %9s %7s %10s %8s\n' "$dtype" "$b" $((g * n)) "$r" "$d" "$disk" "$comp" "$beside" "$e" "$rate" "$er"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
