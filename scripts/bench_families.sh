#!/bin/bash
# Training-step and inference time of every model family at base size beside BERT's, on the
# quickstart's tweets (batch 16, dynamic padding, max_length 128), fp32, on this machine's CPU.
#
#   scripts/bench_families.sh [OUTPUT_DIR] [THREADS]      # default /tmp/bertlab-families, 2
#
# Makes random base-size models with scripts/make_base_models.py (PyTorch + transformers:
# PYTHON, default python3), writes one experiment per family (experiments/quickstart.toml with
# the model and max_length changed) and runs `bertlab bench` on each (10 timed steps after 2,
# inference on 256 validation tweets). Prints one line per family; JSON under OUTPUT_DIR/bench/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
output="${1:-/tmp/bertlab-families}"
threads="${2:-2}"
python="${PYTHON:-python3}"
bertlab="${BERTLAB:-$root/target/release/bertlab}"
families=(bert distilbert roberta xlm-roberta electra electra-small deberta-v3 modernbert)

mkdir -p "$output/experiments" "$output/bench"
[ -d "$output/models/bert" ] || "$python" "$root/scripts/make_base_models.py" "$output/models"
for family in "${families[@]}"; do
  sed -e "s|^name = .*|name = \"bench-$family\"|" \
      -e "s|^train = \"../assets/data/tweets.csv\"|train = \"$root/assets/data/tweets.csv\"|" \
      -e "s|^path = .*|path = \"$output/models/$family\"|" \
      -e "s|^max_length = .*|max_length = 128|" \
      "$root/experiments/quickstart.toml" > "$output/experiments/$family.toml"
done
printf '%-14s %10s %12s %14s %12s %10s\n' family "step (s)" "train (/s)" "tokens/step" "infer (/s)" "RSS (MiB)"
for family in "${families[@]}"; do
  "$bertlab" bench "$output/experiments/$family.toml" --steps 10 --warmup-steps 2 \
    --inference-examples 256 --threads "$threads" --format json > "$output/bench/$family.json" 2> "$output/bench/$family.log"
  "$python" - "$family" "$output/bench/$family.json" <<'PY'
import json, sys
family, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
t, i = d["train"], d["inference"]
print(f"{family:14s} {t['seconds'] / t['batches']:10.2f} {t['samples_per_second']:12.2f} "
      f"{t['padded_tokens'] / t['batches']:14.0f} {i['samples_per_second']:12.1f} {d['peak_rss_mib']:10.0f}")
PY
done
