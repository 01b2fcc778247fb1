#!/usr/bin/env bash
# How much of the compute's rate this machine keeps while its disk reads, measured without our disk tier: `bench` with
# every weight in memory, alone and beside an outside reader (dd with O_DIRECT over a file of random bytes), in turns.
# On a VM whose disk I/O costs the host's share of the cores, the compute slows while any process reads the disk; a
# weights-on-disk run cannot then reach min(compute bound, disk bound), however its own reads are scheduled. `flexgen
# profile` measures the same share through the disk tier (mm_share_dtoc); this script shows it is the machine's, not the
# engine's. A manual benchmark, not a test: run it on a quiet machine.
#
#   scripts/bench-disk-interference.sh [--model opt-1.3b] [--dtype bfloat16] [--block 64x4] [--repeats 2]
#                                      [--file-gb 4] [--dir DIR]
#
# --dir: where the reader's file goes (default: $TMPDIR or /tmp; put it on the disk the offload folder uses).
# Columns per turn: decode token/s alone and beside the reader, their ratio (the compute's share kept), the reader's
# rate beside the compute (min / median / max GB/s over its passes) and its CPU seconds per GB read (in this VM).
set -euo pipefail
# shellcheck source=bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

model=opt-1.3b
dtype=bfloat16
block=64x4
repeats=2
file_gb=4
dir="${TMPDIR:-/tmp}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    --block) block="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --file-gb) file_gb="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
bench_check_block "$block"
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "--repeats takes a positive count, not '$repeats'" >&2; exit 2; }
[[ "$file_gb" =~ ^[1-9][0-9]*$ ]] || { echo "--file-gb takes a positive whole number of GB, not '$file_gb'" >&2; exit 2; }
[[ -d "$dir" && -w "$dir" ]] || { echo "--dir '$dir' is not a writable folder" >&2; exit 2; }
g="${block%x*}" n="${block#*x}"
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (Debian: apt-get install time) for the reader's CPU time" >&2; exit 2; }

bench_flexgen

work="$(mktemp -d "$dir/flexgen-interference.XXXXXX")"
reader_pid=""
# Stops the reader's loop and the pass it is in (dd under time, found by its file).
stop_reader() {
  if [[ -n "$reader_pid" ]]; then
    kill "$reader_pid" 2>/dev/null || true
    wait "$reader_pid" 2>/dev/null || true
    pkill -f "if=$work/read.bin" 2>/dev/null || true
    reader_pid=""
  fi
}
cleanup() {
  stop_reader
  rm -rf "$work"
}
trap cleanup EXIT

# Random bytes: a host that deduplicates or compresses could serve zeros from nowhere.
echo "writing the reader's file: $file_gb GB in $work" >&2
dd if=/dev/urandom of="$work/read.bin" bs=16M count=$((file_gb * 64)) status=none
sync
# Where O_DIRECT reads fail (some file systems refuse them) the reader's loop would spin on failing passes.
dd if="$work/read.bin" of=/dev/null bs=16M count=1 iflag=direct status=none 2>/dev/null \
  || { echo "--dir '$dir' does not take O_DIRECT reads: give a folder on the disk the offload folder uses" >&2; exit 2; }

decode() {
  dotnet "$flexgen" bench --model "$model" --path _DUMMY_ --percent 100 0 100 0 100 0 --gpu-batch-size "$g" \
      --num-gpu-batches "$n" --prompt-len 16 --gen-len 8 --compute-dtype "$dtype" --no-log 2>&1 \
    | awk '/^decode latency/ {print $7}'
}

# Reads the file whole with O_DIRECT until stopped; a line per pass: GB/s and CPU seconds (system + user).
reader() {
  while :; do
    /usr/bin/time -f "cpu %S %U" dd if="$work/read.bin" of=/dev/null bs=16M iflag=direct 2>&1 \
      | awk '/copied/ {for (i = 1; i <= NF; i++) if ($i ~ /^GB\/s|^MB\/s/) r = ($i ~ /^MB/ ? $(i - 1) / 1000 : $(i - 1))}
             /^cpu/ {print r, $2 + $3}'
  done
}

summary() { # "min median max GB/s, CPU s per GB" of the reader's passes in $1
  sort -n "$1" | awk -v gb="$file_gb" '{r[NR] = $1; c += $2} END {
    if (NR == 0) {print "- - - -"; exit}
    printf "%.1f %.1f %.1f %.3f\n", r[1], r[int((NR + 1) / 2)], r[NR], c / (NR * gb * 1.073741824)}'
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
reader > "$work/alone.txt" & reader_pid=$!
sleep 10
stop_reader
read -r amin amed amax acpu < <(summary "$work/alone.txt")
echo "reader alone: $amin / $amed / $amax GB/s (min / median / max), $acpu CPU s per GB"
printf '%-4s %12s %12s %7s %22s %12s\n' turn alone_tok/s beside_tok/s kept reader_GB/s_beside cpu_s/GB
for r in $(seq "$repeats"); do
  alone="$(decode)"
  reader > "$work/beside.txt" & reader_pid=$!
  sleep 2
  beside="$(decode)"
  stop_reader
  read -r bmin bmed bmax bcpu < <(summary "$work/beside.txt")
  kept="$(awk -v a="$alone" -v b="$beside" 'BEGIN {if (a > 0) printf "%.2f", b / a; else print "-"}')"
  printf '%-4s %12s %12s %7s %22s %12s\n' "$r" "${alone:-nan}" "${beside:-nan}" "$kept" "$bmin/$bmed/$bmax" "$bcpu"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
