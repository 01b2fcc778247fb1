# Shared by the bench scripts (sourced, not run): the flexgen build they drive and their argument checks.

# The Release build of flexgen next to these scripts, built first where it is missing; sets $root and $flexgen.
bench_flexgen() {
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  flexgen="$root/src/Host/bin/Release/net10.0/flexgen.dll"
  [[ -f "$flexgen" ]] || dotnet build -c Release "$root/src/Host" >&2
}

# Exits 2 unless $1 is a block GxN (gpu-batch-size x num-gpu-batches).
bench_check_block() {
  [[ "$1" =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "a block is GxN (gpu-batch-size x num-gpu-batches), not '$1'" >&2; exit 2; }
}
