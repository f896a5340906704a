#!/usr/bin/env bash
# The machine's fp32 peak (AVX-512 FMA throughput) on N threads, the denominator for the
# "share of the fp32 peak" docs/performance.md gives: scripts/fp32-peak.sh [THREADS] (default 2).
# Needs gcc and a CPU with AVX-512F.
set -euo pipefail
cd "$(dirname "$0")"
if ! grep -q avx512f /proc/cpuinfo; then
  echo "fp32-peak.sh: this CPU has no AVX-512F" >&2
  exit 1
fi
binary=$(mktemp)
trap 'rm -f "$binary"' EXIT
gcc -O2 -mavx512f -mfma -o "$binary" fp32_peak.c -lpthread
"$binary" "${1:-2}"
