#!/usr/bin/env bash
# Rebuilds libflexgen_mkl_cpu.so from mkl_cpu.c (x86-64 Linux; the committed copy is what this writes).
set -euo pipefail
cd "$(dirname "$0")"
gcc -shared -fPIC -O2 -Wl,-soname,libflexgen_mkl_cpu.so -o libflexgen_mkl_cpu.so mkl_cpu.c
strip --strip-unneeded libflexgen_mkl_cpu.so
