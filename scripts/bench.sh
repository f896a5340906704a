#!/usr/bin/env bash
# bertlab and PyTorch on the same work, back to back, and the table with the ratios.
#
#   scripts/fetch-assets.sh
#   scripts/bench.sh [EXPERIMENT.toml] [--threads N] [--steps N] [--check]
#
# Defaults: experiments/quickstart.toml, 2 threads, 60 timed training steps. PYTHON names the
# interpreter that has torch and transformers (default: python3). The reports and the exported
# split stay in BENCH_OUT (default: a new temporary folder), printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

experiment=experiments/quickstart.toml
threads=2
steps=60
check=()
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --check) check=(--check); shift ;;
    -*) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    *) experiment=$1; shift ;;
  esac
done
python=${PYTHON:-python3}
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"

cargo build --release --locked --quiet
./target/release/bertlab data "$experiment" --export "$out/split" > /dev/null
./target/release/bertlab bench "$experiment" --threads "$threads" --steps "$steps" --format json > "$out/bertlab.json"
# An experiment with several data setups exports one folder per setup; bench measures the
# first run, whose setup is the first.
split="$out/split"
[ -d "$split/setup-1" ] && split="$split/setup-1"
"$python" scripts/bench_pytorch.py --like "$out/bertlab.json" --split "$split" --threads "$threads" > "$out/pytorch.json"
python3 scripts/bench_compare.py "$out/bertlab.json" "$out/pytorch.json" "${check[@]}"
echo "reports: $out/bertlab.json $out/pytorch.json" >&2
