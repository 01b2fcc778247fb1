#!/usr/bin/env bash
# Ours against a plain PyTorch eager OPT (the peer), same batch, back to back: the rows of issue 10's CPU targets.
# A manual benchmark, not a test: run it on a quiet machine (load below 1) and read the ratios, not the absolute speeds.
#
#   scripts/bench-compare.sh --peer /path/to/opt_torch.py [--repeats 3] [--dtype float32] [--blocks "1 4"]
#
# --peer (or FLEXGEN_PEER): the peer script (shared/tools/peer/opt_torch.py; set-up in its README), run with
# FLEXGEN_PEER_PYTHON (default /usr/bin/python3). Ours: the Release build of src/Host (built first when missing).
# Each row: OPT-125m, float32 weights in memory, prompt 64, 16 new tokens, gpu batch 8 x B GPU batches.
set -euo pipefail

peer="${FLEXGEN_PEER:-}"
python="${FLEXGEN_PEER_PYTHON:-/usr/bin/python3}"
repeats=3
dtype=float32
blocks="1 4"
threads="$(nproc)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --peer) peer="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    --blocks) blocks="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$peer" || ! -f "$peer" ]]; then
  echo "the peer script is needed: --peer PATH or FLEXGEN_PEER (shared/tools/peer/opt_torch.py)" >&2
  exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
flexgen="$root/src/Host/bin/Release/net10.0/flexgen.dll"
[[ -f "$flexgen" ]] || dotnet build -c Release "$root/src/Host" >&2

# "prefill decode" tok/s of one run each.
run_peer() {
  "$python" "$peer" bench --placement mem --batch "$1" --prompt-len 64 --gen-len 16 --threads "$threads" |
    "$python" -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(r["prefill_tok_s"], r["decode_tok_s"])'
}
run_ours() {
  dotnet "$flexgen" bench --model opt-125m --path _DUMMY_ --percent 100 0 100 0 100 0 --gpu-batch-size 8 \
      --num-gpu-batches "$1" --prompt-len 64 --gen-len 16 --compute-dtype "$dtype" --no-log 2>/dev/null |
    awk '/^prefill latency/ {p=$7} /^decode latency/ {d=$7} END {print p, d}'
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %-4s %12s %12s %12s %12s %9s %9s\n' batch run peer_prefill peer_decode ours_prefill ours_decode x_prefill x_decode
for b in $blocks; do
  for r in $(seq "$repeats"); do
    read -r pp pd < <(run_peer $((8 * b)))
    read -r op od < <(run_ours "$b")
    awk -v n="8x$b" -v r="$r" -v pp="$pp" -v pd="$pd" -v op="$op" -v od="$od" \
      'BEGIN {printf "%-10s %-4s %12.1f %12.1f %12.1f %12.1f %9.2f %9.2f\n", n, r, pp, pd, op, od, op/pp, od/pd}'
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
