#!/usr/bin/env bash
# Calibration of the planner's cost model on this machine: for each CPU configuration, bench's measured total
# throughput against the cost model's prediction at the run's policy and block (bench prints both; see its "bounds").
#
#   scripts/calibrate.sh [--hardware FILE.json] [--only N[,N...]]
#
# Without --hardware the profile is measured first (flexgen profile, about 30 s) into the offload folder.
# FLEXGEN (default: dotnet run -c Release --project src/Host --) runs the CLI; OFFLOAD_DIR (default: a temp folder) holds
# the disk tier and the profile. Prints one table row per configuration: predicted, measured, measured / predicted.
set -euo pipefail
cd "$(dirname "$0")/.."
FLEXGEN=${FLEXGEN:-"dotnet run -c Release --project src/Host --"}
OFFLOAD_DIR=${OFFLOAD_DIR:-$(mktemp -d -t flexgen-calibrate-XXXXXX)}
HARDWARE=""
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hardware) HARDWARE=$2; shift 2 ;;
    --only) ONLY=",$2,"; shift 2 ;;
    *) echo "usage: $0 [--hardware FILE.json] [--only N[,N...]]" >&2; exit 2 ;;
  esac
done
if [[ -z "$HARDWARE" ]]; then
  HARDWARE=$OFFLOAD_DIR/hardware.json
  $FLEXGEN profile --output "$HARDWARE" --offload-dir "$OFFLOAD_DIR" >&2
fi

# name | model | gpu-batch-size | num-gpu-batches | percent (six) | cpu-cache-compute
CONFIGS=(
  "resident-8x1|opt-125m|8|1|100 0 100 0 100 0|false"
  "weights-disk-8x1|opt-125m|8|1|0 0 100 0 100 0|false"
  "cache-cpu-attention-8x4|opt-125m|8|4|100 0 0 100 100 0|true"
  "resident-32x4|opt-125m|32|4|100 0 100 0 100 0|false"
  "weights-disk-8x4|opt-125m|8|4|0 0 100 0 100 0|false"
  "1.3b-resident-8x1|opt-1.3b|8|1|100 0 100 0 100 0|false"
  "1.3b-weights-disk-16x1|opt-1.3b|16|1|0 0 100 0 100 0|false"
)

echo "uptime: $(uptime)"
printf '| %-2s | %-24s | %-8s | %-7s | %-18s | %-12s | %-11s | %-8s |\n' "#" config model block percent "predicted" "measured" ratio
printf '|----|--------------------------|----------|---------|--------------------|--------------|-------------|----------|\n'
i=0
for config in "${CONFIGS[@]}"; do
  i=$((i + 1))
  [[ -n "$ONLY" && "$ONLY" != *",$i,"* ]] && continue
  IFS='|' read -r name model gbs nb percent cpu <<< "$config"
  # shellcheck disable=SC2086
  if ! out=$($FLEXGEN bench --model "$model" --path _DUMMY_ --gpu-batch-size "$gbs" --num-gpu-batches "$nb" --percent $percent \
        --cpu-cache-compute "$cpu" --prompt-len 64 --gen-len 16 --compute-dtype float32 --no-log \
        --offload-dir "$OFFLOAD_DIR" --hardware "$HARDWARE" 2>&1); then
    printf '| %-2s | %-24s | failed: %s\n' "$i" "$name" "$(grep -E '^(error|failed)' <<< "$out" | head -1)"
    continue
  fi
  line=$(grep -E '^  total: +predicted' <<< "$out")
  predicted=$(sed -E 's/.*predicted ([0-9.]+),.*/\1/' <<< "$line")
  measured=$(sed -E 's/.*measured ([0-9.]+) token.*/\1/' <<< "$line")
  ratio=$(sed -E 's/.*measured \/ predicted ([0-9.]+).*/\1/' <<< "$line")
  printf '| %-2s | %-24s | %-8s | %-7s | %-18s | %8s tok/s | %7s tok/s | %8s |\n' "$i" "$name" "$model" "${gbs}x${nb}" "$percent" "$predicted" "$measured" "$ratio"
done
echo "uptime: $(uptime)"
