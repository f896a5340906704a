#!/usr/bin/env bash
# Proves and measures a `cuda` build of bertlab on a GPU machine that has an NVIDIA driver and
# CUDA 13 libraries (in its Python environment, as PyTorch's wheels install them) but no network
# and no Rust toolchain. Build the binary elsewhere (x86-64), bring it along:
#
#   eval "$(scripts/cuda-toolkit.sh)" && cargo build --release --features cuda
#   mkdir -p .gpu && cp target/release/bertlab .gpu/ && strip .gpu/bertlab
#   ... on the GPU machine, from the repository root:
#   scripts/gpu-check.sh .gpu/bertlab [OUTPUT_DIR]
#
# Needs, beside the binary: tests/fixtures/tiny-bert (in the repository), assets/data/tweets.csv
# and assets/models/all-MiniLM-L6-v2 (scripts/fetch-assets.sh; without model.safetensors the
# example model gets random weights), and python3 with torch + transformers for random weights
# and the PyTorch comparison (skipped without them).
#
# Steps, each with a time limit; the summary (OUTPUT_DIR/summary.md) says what passed:
#  1. the GPU, the driver, and the binary's CUDA libraries (ldd);
#  2. `bertlab device-check` on the tiny model: logits, every gradient, AdamW steps and dropout
#     on the GPU against the CPU, in f64, f32 and bf16;
#  3. `bertlab bench`: a few hundred training steps and inference, bf16 and fp32, of a
#     bert-base-sized model (random weights) at batch 32 x 128 tokens and of the example model at
#     the same shape and on its tweets (dynamic padding, batch 16), with the GPU's peak memory
#     sampled from nvidia-smi;
#  4. PyTorch eager (scripts/gpu_bench_pytorch.py) on the same fixed-shape work;
#  5. `bertlab run --devices 0` of a small experiment (the example model, 2 epochs of 2,000
#     tweets): run.json must record cuda:0.
# GPU_CHECK_STEPS sets the timed steps (default 300), GPU_CHECK_WARMUP the untimed ones before
# them (10), GPU_CHECK_INFERENCE the examples of the inference measurement (1024),
# GPU_CHECK_RUN_EXAMPLES the training examples of the run (2000).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
binary="$(realpath "${1:-.gpu/bertlab}")"
out="$(mkdir -p "${2:-gpu-check-out}" && realpath "${2:-gpu-check-out}")"
python="${PYTHON:-python3}"
steps="${GPU_CHECK_STEPS:-300}"
warmup="${GPU_CHECK_WARMUP:-10}"
inference="${GPU_CHECK_INFERENCE:-1024}"
run_examples="${GPU_CHECK_RUN_EXAMPLES:-2000}"
work="$(mktemp -d /tmp/bertlab-gpu-check.XXXXXX)"
summary="$out/summary.md"
: > "$summary"

note() { echo "$*" | tee -a "$summary"; }

# The CUDA libraries the binary links (cuBLAS, cuRAND, NVRTC, the runtime) from Python's
# site-packages (nvidia/cu13/lib and the like); the driver's libcuda is on the system path.
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
if [ -n "$site" ] && [ -d "$site/nvidia" ]; then
    libraries="$(find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)"
    export LD_LIBRARY_PATH="$libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# The driver's libcuda.so.1: on the loader's path, or in one of the places drivers are mounted.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then
    for folder in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
        if [ -e "$folder/libcuda.so.1" ]; then
            export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$folder"
            break
        fi
    done
fi
export RUST_BACKTRACE=1

note "# bertlab GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
note ""
note "## 1. Machine"
note '```'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$summary"
"$binary" --version 2>&1 | tee -a "$summary"
if ldd "$binary" | grep -q 'not found'; then
    ldd "$binary" | grep 'not found' | tee -a "$summary"
    note "error: the binary's libraries are missing (looked in $site/nvidia)"
    note '```'
    exit 1
fi
ldd "$binary" | grep -E 'libcuda|cublas|curand|nvrtc|cudart' | tee -a "$summary"
note '```'

# measure NAME SECONDS COMMAND...: runs the command with a time limit, its stdout into
# OUTPUT_DIR/NAME.out and stderr into NAME.log, sampling the GPU's memory in use every 100 ms.
measure() {
    local name="$1" limit="$2"
    shift 2
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/$name.memory" 2>/dev/null &
    local sampler=$!
    local started=$SECONDS
    timeout "$limit" "$@" > "$out/$name.out" 2> "$out/$name.log"
    local status=$?
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    local peak
    peak="$(sort -n "$out/$name.memory" | tail -1)"
    echo "$name: exit $status in $((SECONDS - started)) s, peak GPU memory ${peak:-?} MiB" | tee -a "$out/timings.txt" >&2
    echo "$peak" > "$out/$name.peak"
    return $status
}

note ""
note "## 2. Gradient check, GPU against CPU (tiny model)"
note '```'
measure device-check 180 "$binary" device-check tests/fixtures/tiny-bert --device cuda:0
status=$?
cat "$out/device-check.out" >> "$summary"
[ $status -eq 0 ] || tail -20 "$out/device-check.log" >> "$summary"
note '```'

# The models: the example model (its checkpoint, else random weights) and bert-base-sized
# (random weights, the example model's uncased WordPiece vocabulary, which bert-base shares).
example="$root/assets/models/all-MiniLM-L6-v2"
mkdir -p "$work/minilm" "$work/bert-base"
cp "$example"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$work/minilm/"
if [ -f "$example/model.safetensors" ]; then
    ln -s "$example/model.safetensors" "$work/minilm/model.safetensors"
    example_weights="checkpoint"
else
    example_weights="random"
fi
cp "$example"/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$work/bert-base/"
cat > "$work/bert-base/config.json" <<'JSON'
{"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
 "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
 "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
 "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02,
 "layer_norm_eps": 1e-12, "pad_token_id": 0}
JSON
"$python" - "$work/bert-base" $([ "$example_weights" = random ] && echo "$work/minilm") <<'PY' 2> "$out/random-weights.log"
import sys
from transformers import BertConfig, BertModel
for folder in sys.argv[1:]:
    BertModel(BertConfig.from_pretrained(folder)).save_pretrained(folder, safe_serialization=True)
PY
note ""
note "Models: example (all-MiniLM-L6-v2) with $example_weights weights; bert-base-sized with random weights."

experiment() { # NAME MODEL MAX_LENGTH BATCH EPOCHS
    cat > "$work/$1.toml" <<TOML
name = "$1"
[data]
train = "$root/assets/data/tweets.csv"
text_column = "text"
label_column = "sentiment"
encoding = "utf8-lossy"
drop_duplicates = true
validation_fraction = 0.05
test_fraction = 0.05
max_train_examples = $run_examples
[labels]
negative = 0
neutral = 1
positive = 2
[model]
path = "$2"
[train]
device = "cuda"
max_length = $3
batch_size = $4
learning_rate = 1e-4
epochs = $5
warmup_ratio = 0.1
weight_decay = 0.01
seed = 0
TOML
}
experiment example-run "$work/minilm" 64 16 2
experiment example "$work/minilm" 128 16 1
experiment example-32 "$work/minilm" 128 32 1
experiment bert-base "$work/bert-base" 128 32 1

note ""
note "## 3-4. Throughput ($steps timed training steps after $warmup untimed ones), bf16 first"
for precision in bf16 fp32; do
    measure "bench-bert-base-32x128-$precision" 200 "$binary" bench "$work/bert-base.toml" --device cuda:0 \
        --precision "$precision" --steps "$steps" --warmup-steps "$warmup" --sequence-length 128 --inference-examples "$inference" --format json
    measure "pytorch-bert-base-32x128-$precision" 150 "$python" scripts/gpu_bench_pytorch.py --model "$work/bert-base" \
        --batch-size 32 --sequence-length 128 --steps "$steps" --warmup-steps "$warmup" --precision "$precision"
    measure "bench-example-32x128-$precision" 120 "$binary" bench "$work/example-32.toml" --device cuda:0 \
        --precision "$precision" --steps "$steps" --warmup-steps "$warmup" --sequence-length 128 --inference-examples "$inference" --format json
    measure "pytorch-minilm-32x128-$precision" 120 "$python" scripts/gpu_bench_pytorch.py --model "$work/minilm" \
        --batch-size 32 --sequence-length 128 --steps "$steps" --warmup-steps "$warmup" --precision "$precision"
    measure "bench-example-$precision" 120 "$binary" bench "$work/example.toml" --device cuda:0 \
        --precision "$precision" --steps "$steps" --warmup-steps "$warmup" --inference-examples "$inference" --format json
done

"$python" - "$out" <<'PY' | tee -a "$summary"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name + ".out")) as handle:
            return json.loads(handle.read())
    except Exception:
        return None
def peak(name):
    try:
        return open(os.path.join(out, name + ".peak")).read().strip() or "?"
    except Exception:
        return "?"
print()
print("| work | precision | bertlab train samples/s | PyTorch train samples/s | ratio | bertlab inference samples/s | PyTorch inference samples/s | bertlab peak GPU MiB | PyTorch peak GPU MiB (allocated / reserved) |")
print("|---|---|---|---|---|---|---|---|---|")
for precision in ["fp32", "bf16"]:
    for work, bertlab_name, pytorch_name in [
        ("example model, tweets, batch 16, dynamic padding", f"bench-example-{precision}", None),
        ("example model, batch 32 x 128", f"bench-example-32x128-{precision}", f"pytorch-minilm-32x128-{precision}"),
        ("bert-base, batch 32 x 128", f"bench-bert-base-32x128-{precision}", f"pytorch-bert-base-32x128-{precision}"),
    ]:
        ours = load(bertlab_name)
        theirs = load(pytorch_name) if pytorch_name else None
        ours_train = ours["train"]["samples_per_second"] if ours else None
        theirs_train = theirs["train_samples_per_second"] if theirs else None
        ratio = f"{ours_train / theirs_train:.2f}x" if ours_train and theirs_train else "-"
        fmt = lambda value: f"{value:.1f}" if isinstance(value, (int, float)) else "-"
        print(f"| {work} | {precision} | {fmt(ours_train)} | {fmt(theirs_train)} | {ratio} | "
              f"{fmt(ours['inference']['samples_per_second'] if ours else None)} | "
              f"{fmt(theirs['inference_samples_per_second'] if theirs else None)} | {peak(bertlab_name)} | "
              + (f"{theirs['max_memory_allocated_mib']:.0f} / {theirs['max_memory_reserved_mib']:.0f}" if theirs else "-") + " |")
PY
note ""
note "## 5. A run on the GPU (bertlab run --devices 0)"
note '```'
measure run 240 "$binary" --runs "$work/runs" run "$work/example-run.toml" --devices 0
status=$?
cat "$out/run.out" >> "$summary"
grep -h '"device"' "$work"/runs/*/run.json 2>/dev/null | tee -a "$summary"
grep -hE 'done in|failed' "$out/run.log" | tee -a "$summary"
[ $status -eq 0 ] || tail -20 "$out/run.log" >> "$summary"
note '```'

note ""
note "Per-step logs, outputs and memory samples: $out (timings.txt lists every step's exit status)."
cat "$out/timings.txt" >> "$summary"
