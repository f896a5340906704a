#!/bin/bash
# What a long batch costs ModernBERT base on this machine's CPU: one training step and inference
# on batches padded to each length (`bertlab bench --sequence-length N`), fp32, and the peak RSS.
#
#   scripts/bench_long_sequences.sh [OUTPUT_DIR] [BATCH_SIZE] [LENGTH...]
#       defaults: /tmp/bertlab-long, 1, 512 1024 2048 4096
#
# The model is scripts/make_base_models.py's random ModernBERT base (made under OUTPUT_DIR/models
# if absent: PyTorch + transformers, PYTHON, default python3); the experiment is
# experiments/quickstart.toml with that model, `max_length = 8192` and BATCH_SIZE. Each length
# runs 1 timed training step after 1 untimed one, and inference on 2 examples in batches of 1.
# Prints one line per length; JSON under OUTPUT_DIR/bench/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
output="${1:-/tmp/bertlab-long}"
batch_size="${2:-1}"
shift $(($# < 2 ? $# : 2))
lengths=("$@")
[ ${#lengths[@]} -gt 0 ] || lengths=(512 1024 2048 4096)
python="${PYTHON:-python3}"
bertlab="${BERTLAB:-$root/target/release/bertlab}"

mkdir -p "$output/experiments" "$output/bench"
[ -d "$output/models/modernbert" ] \
  || "$python" "$root/scripts/make_base_models.py" "$output/models" --family modernbert
experiment="$output/experiments/modernbert-long.toml"
sed -e 's|^name = .*|name = "bench-modernbert-long"|' \
    -e "s|^train = \"../assets/data/tweets.csv\"|train = \"$root/assets/data/tweets.csv\"|" \
    -e "s|^path = .*|path = \"$output/models/modernbert\"|" \
    -e 's|^max_length = .*|max_length = 8192|' \
    -e "s|^batch_size = .*|batch_size = $batch_size|" \
    "$root/experiments/quickstart.toml" > "$experiment"
printf '%-8s %6s %10s %14s %16s %16s\n' length batch "step (s)" "infer (s/ex)" "train RSS (MiB)" "peak RSS (MiB)"
for length in "${lengths[@]}"; do
  "$bertlab" bench "$experiment" --steps 1 --warmup-steps 1 --sequence-length "$length" \
    --inference-examples 2 --inference-batch-size 1 --threads "${THREADS:-2}" --format json \
    > "$output/bench/$length.json" 2> "$output/bench/$length.log"
  "$python" - "$length" "$batch_size" "$output/bench/$length.json" <<'PY'
import json, sys
length, batch, path = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(path))
t, i = d["train"], d["inference"]
print(f"{length:8s} {batch:>6s} {t['seconds'] / t['batches']:10.2f} {i['seconds'] / i['examples']:14.2f} "
      f"{d.get('peak_rss_train_mib', 0):16.0f} {d['peak_rss_mib']:16.0f}")
PY
done
