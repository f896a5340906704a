#!/usr/bin/env bash
# bertlab and PyTorch on the same work, back to back, and the table with the ratios.
#
#   scripts/fetch-assets.sh
#   scripts/bench.sh [EXPERIMENT.toml] [--threads N] [--steps N] [--precision fp32|bf16]
#                    [--batch-size N] [--sequence-length N] [--check]
#
# Defaults: experiments/quickstart.toml, 2 threads, 60 timed training steps, the run's precision,
# batch size and tokens as tokenized (dynamic padding). `--sequence-length 128 --batch-size 32`
# measures fixed-shape work: every example its own ids repeated to 128 tokens, no padding.
# With --precision bf16, bertlab runs bf16 products and PyTorch runs twice: fp32 (the issue's
# comparison) and bf16 autocast (like for like), one table each. PYTHON names the
# interpreter that has torch and transformers (default: python3). The reports and the exported
# split stay in BENCH_OUT (default: a new temporary folder), printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

experiment=experiments/quickstart.toml
threads=2
steps=60
check=()
precision=()
shape=()
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --check) check=(--check); shift ;;
    --precision) precision=(--precision "$2"); shift 2 ;;
    --batch-size) shape+=(--batch-size "$2"); shift 2 ;;
    --sequence-length) shape+=(--sequence-length "$2"); shift 2 ;;
    -*) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    *) experiment=$1; shift ;;
  esac
done
python=${PYTHON:-python3}
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"

cargo build --release --locked --quiet
./target/release/bertlab data "$experiment" --export "$out/split" > /dev/null
./target/release/bertlab bench "$experiment" --threads "$threads" --steps "$steps" "${precision[@]}" "${shape[@]}" --format json > "$out/bertlab.json"
# An experiment with several data setups exports one folder per setup; bench measures the
# first run, whose setup is the first.
split="$out/split"
[ -d "$split/setup-1" ] && split="$split/setup-1"
"$python" scripts/bench_pytorch.py --like "$out/bertlab.json" --split "$split" --threads "$threads" --precision fp32 > "$out/pytorch.json"
python3 scripts/bench_compare.py "$out/bertlab.json" "$out/pytorch.json" "${check[@]}"
reports="$out/bertlab.json $out/pytorch.json"
if grep -q '"precision": "bf16"' "$out/bertlab.json"; then
  "$python" scripts/bench_pytorch.py --like "$out/bertlab.json" --split "$split" --threads "$threads" --precision bf16 > "$out/pytorch-bf16.json"
  echo
  python3 scripts/bench_compare.py "$out/bertlab.json" "$out/pytorch-bf16.json"
  reports="$reports $out/pytorch-bf16.json"
fi
echo "reports: $reports" >&2
