#!/usr/bin/env bash
# The rows of issue 10's CPU targets: ours against a plain PyTorch eager OPT (the peer), same batch, back to back, and
# ours against the compute bound that `bench` prints. A manual benchmark, not a test: run it on a quiet machine
# (load below 1) and read the ratios, not the absolute speeds.
#
#   scripts/bench-compare.sh --peer /path/to/opt_torch.py [--repeats 3] [--dtype float32] [--blocks "1 4"]
#   scripts/bench-compare.sh --model opt-1.3b --no-peer [--dtype bfloat16]
#
# --peer (or FLEXGEN_PEER): the peer script (shared/tools/peer/opt_torch.py; set-up in its README), run with
# FLEXGEN_PEER_PYTHON (default /usr/bin/python3); it only has OPT-125m's shapes. --no-peer: ours only (any model).
# Ours: the Release build of src/Host (built first when missing). Each row: float32 (or --dtype) weights in memory,
# prompt 64, 16 new tokens, gpu batch 8 x B GPU batches. x_*: ours / peer; eff_*: ours / compute bound (bench's
# efficiency line); steal%: the CPU time the hypervisor took from this VM during the row (both runs), from /proc/stat;
# dec_idle%: the share of the machine's CPU idle during our decode (bench's machine CPU line): cores the engine left unused.
set -euo pipefail
# shellcheck source=bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

peer="${FLEXGEN_PEER:-}"
python="${FLEXGEN_PEER_PYTHON:-/usr/bin/python3}"
repeats=3
dtype=float32
blocks="1 4"
model=opt-125m
use_peer=1
threads="$(nproc)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --peer) peer="$2"; shift 2 ;;
    --no-peer) use_peer=0; shift ;;
    --model) model="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    --blocks) blocks="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [[ "$use_peer" == 1 ]]; then
  if [[ -z "$peer" || ! -f "$peer" ]]; then
    echo "the peer script is needed: --peer PATH or FLEXGEN_PEER (shared/tools/peer/opt_torch.py), or --no-peer" >&2
    exit 2
  fi
  if [[ "$model" != opt-125m ]]; then
    echo "the peer has OPT-125m's shapes only: use --no-peer with --model $model" >&2
    exit 2
  fi
fi

bench_flexgen

# "prefill decode" tok/s of one run each.
run_peer() {
  "$python" "$peer" bench --placement mem --batch "$1" --prompt-len 64 --gen-len 16 --threads "$threads" |
    "$python" -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(r["prefill_tok_s"], r["decode_tok_s"])'
}
# "prefill decode prefill_efficiency decode_efficiency decode_idle%" of one run (the idle share of the machine's CPU
# during decode, from bench's /proc/stat line: what the engine left unused).
run_ours() {
  dotnet "$flexgen" bench --model "$model" --path _DUMMY_ --percent 100 0 100 0 100 0 --gpu-batch-size 8 \
      --num-gpu-batches "$1" --prompt-len 64 --gen-len 16 --compute-dtype "$dtype" --no-log 2>/dev/null |
    awk '/^prefill latency/ {p=$7} /^decode latency/ {d=$7}
         /^  prefill: bound/ {for (i=1;i<=NF;i++) if ($i=="efficiency") pe=$(i+1)}
         /^  decode: +bound/ {for (i=1;i<=NF;i++) if ($i=="efficiency") de=$(i+1)}
         /^machine CPU/ {s=$0; sub(/.*; decode /, "", s); if (match(s, /idle [0-9]+%/)) di=substr(s, RSTART+5, RLENGTH-6)}
         END {print p, d, pe, de, (di == "" ? "-" : di)}'
}
# "busy steal" jiffies of all CPUs so far.
cpu_jiffies() { awk '/^cpu / {print $2+$3+$4+$6+$7+$8+$9, $9}' /proc/stat; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %-9s %-4s %10s %10s %10s %10s %9s %9s %8s %8s %7s %9s\n' \
  batch model run peer_pref peer_dec ours_pref ours_dec x_pref x_dec eff_pref eff_dec steal% dec_idle%
for b in $blocks; do
  for r in $(seq "$repeats"); do
    read -r busy0 steal0 < <(cpu_jiffies)
    pp=nan pd=nan
    [[ "$use_peer" == 1 ]] && read -r pp pd < <(run_peer $((8 * b)))
    read -r op od pe de di < <(run_ours "$b")
    read -r busy1 steal1 < <(cpu_jiffies)
    awk -v n="8x$b" -v m="$model" -v r="$r" -v pp="$pp" -v pd="$pd" -v op="$op" -v od="$od" -v pe="${pe:-nan}" -v de="${de:-nan}" -v di="${di:--}" \
        -v st=$((steal1 - steal0)) -v bu=$((busy1 - busy0)) \
      'BEGIN {xp = (pp == "nan") ? "-" : sprintf("%.2f", op/pp); xd = (pd == "nan") ? "-" : sprintf("%.2f", od/pd);
              pps = (pp == "nan") ? "-" : sprintf("%.1f", pp); pds = (pd == "nan") ? "-" : sprintf("%.1f", pd);
              printf "%-10s %-9s %-4s %10s %10s %10.1f %10.1f %9s %9s %8s %8s %7.1f %9s\n", n, m, r, pps, pds, op, od, xp, xd, pe, de, (bu > 0 ? 100*st/bu : 0), di}'
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
