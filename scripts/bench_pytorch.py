#!/usr/bin/env python3
"""PyTorch + transformers on exactly the work `bertlab bench` measures, for the side-by-side table
of `scripts/bench.sh`.

    bertlab data experiments/quickstart.toml --export /tmp/split
    bertlab bench experiments/quickstart.toml --threads 2 --format json > bertlab.json
    python3 scripts/bench_pytorch.py --like bertlab.json --split /tmp/split --threads 2 > pytorch.json

Every setting comes from bertlab's report (`--like`): the model directory, classes, max_length,
batch size, learning rate, weight decay, warmup ratio, clipping, dropout, warm-up and timed steps,
inference batch size and examples. The work is the same as bertlab's:
- training: steps of AdamW (no decay on biases and LayerNorm weights) on transformers' linear
  warmup/decay schedule, clipping at max_grad_norm, on batches of `batch_size` consecutive
  training examples in file order (batch i starts at example i * batch_size, wrapping around),
  each padded to its longest row (dynamic padding), model in train mode (dropout on);
- inference: the first N validation examples in batches of consecutive examples, eval mode,
  `torch.inference_mode()`, after one untimed batch;
- `sequence_length` (bertlab's `--sequence-length`): every example its own ids repeated to
  exactly that many tokens, so no batch has padding;
- peak RSS: ru_maxrss of this process after training, again after inference.
Precision: bertlab's (`precision` in its report) unless `--precision` says otherwise; bf16 runs
the forward passes under `torch.autocast("cpu", dtype=torch.bfloat16)` (bf16 matrix products,
fp32 weights and optimizer), the loss in fp32.
Prints one JSON object with the same fields as bertlab's report.
"""
import argparse
import csv
import json
import resource
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup


def read_split(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def throughput(warmup, batches, lengths, seconds):
    examples = sum(len(batch) for batch in batches)
    tokens = sum(lengths[index] for batch in batches for index in batch)
    padded = sum(len(batch) * max(lengths[index] for index in batch) for batch in batches)
    return {
        "warmup_batches": warmup,
        "batches": len(batches),
        "examples": examples,
        "tokens": tokens,
        "padded_tokens": padded,
        "seconds": seconds,
        "samples_per_second": examples / seconds,
        "tokens_per_second": tokens / seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--like", required=True, help="`bertlab bench --format json` output")
    parser.add_argument("--split", required=True, help="folder written by `bertlab data --export`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bertlab's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.like) as handle:
        like = json.load(handle)

    precision = args.precision or like.get("precision", "fp32")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    classes = like["classes"]
    class_id = {name: index for index, name in enumerate(classes)}
    tokenizer = AutoTokenizer.from_pretrained(like["model"])
    with open(f"{like['model']}/config.json") as handle:
        model_type = json.load(handle).get("model_type", "bert")
    # bertlab's three dropout settings under each family's own config keys (docs/model.md).
    dropout_keys = {
        "distilbert": ("dropout", "attention_dropout", "seq_classif_dropout"),
        "deberta-v2": ("hidden_dropout_prob", "attention_probs_dropout_prob", "cls_dropout"),
        "modernbert": ("mlp_dropout", "attention_dropout", "classifier_dropout"),
    }.get(model_type, ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"))
    config = AutoConfig.from_pretrained(like["model"], num_labels=len(classes))
    for key, rate in zip(dropout_keys, (like["hidden_dropout"], like["attention_dropout"], like["classifier_dropout"])):
        setattr(config, key, rate)  # DeBERTa's `cls_dropout` is read from the config, not a field
    model = AutoModelForSequenceClassification.from_pretrained(like["model"], config=config)
    torch.manual_seed(0)

    def encode(texts):
        ids = tokenizer(texts, truncation=True, max_length=like["max_length"])["input_ids"]
        length = like.get("sequence_length")
        if length:  # bertlab's `--sequence-length`: each example's own ids repeated to that length
            ids = [[row[i % len(row)] for i in range(length)] if row else [] for row in ids]
        return ids

    train = read_split(f"{args.split}/train.csv")
    validation = read_split(f"{args.split}/validation.csv")
    train_ids = encode([text for text, _ in train])
    train_labels = [class_id[label] for _, label in train]
    pad_id = tokenizer.pad_token_id

    def collate(ids, indices):
        longest = max(len(ids[index]) for index in indices)
        input_ids = torch.full((len(indices), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), longest), dtype=torch.long)
        for row, index in enumerate(indices):
            input_ids[row, : len(ids[index])] = torch.tensor(ids[index])
            mask[row, : len(ids[index])] = 1
        return input_ids, mask

    # Training: the same batches as bertlab's bench.
    warmup_steps = like["train"]["warmup_batches"]
    steps = like["train"]["batches"]
    batch_size = like["batch_size"]
    n = len(train_ids)
    batches = [[(step * batch_size + offset) % n for offset in range(batch_size)] for step in range(warmup_steps + steps)]
    def decays(name):  # bertlab's `applies_weight_decay`: no bias, no normalisation weight
        module = name.removesuffix(".weight").rsplit(".", 1)[-1]
        return not (name.endswith("bias") or "LayerNorm" in name or module.endswith("norm"))

    no_decay = [p for name, p in model.named_parameters() if not decays(name)]
    decay = [p for name, p in model.named_parameters() if decays(name)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": like["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=like["learning_rate"],
    )
    total = warmup_steps + steps
    schedule = get_linear_schedule_with_warmup(optimizer, int(-(-like["warmup_ratio"] * total // 1)), total)
    model.train()
    start = time.perf_counter()
    for step, indices in enumerate(batches):
        if step == warmup_steps:
            start = time.perf_counter()
        input_ids, mask = collate(train_ids, indices)
        labels = torch.tensor([train_labels[index] for index in indices])
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        if like["max_grad_norm"] > 0:  # bertlab: 0 means no clipping
            torch.nn.utils.clip_grad_norm_(model.parameters(), like["max_grad_norm"])
        optimizer.step()
        schedule.step()
    train_seconds = time.perf_counter() - start
    lengths = [len(ids) for ids in train_ids]
    train_figures = throughput(warmup_steps, batches[warmup_steps:], lengths, train_seconds)
    peak_train = peak_rss_mib()

    # Inference.
    examples = like["inference"]["examples"]
    inference_ids = encode([text for text, _ in validation[:examples]])
    size = like["inference_batch_size"]
    inference_batches = [list(range(start, min(start + size, examples))) for start in range(0, examples, size)]
    model.eval()
    with torch.inference_mode(), autocast:
        input_ids, mask = collate(inference_ids, inference_batches[0])
        model(input_ids=input_ids, attention_mask=mask).logits.float().numpy()
        start = time.perf_counter()
        for indices in inference_batches:
            input_ids, mask = collate(inference_ids, indices)
            model(input_ids=input_ids, attention_mask=mask).logits.float().numpy()
        inference_seconds = time.perf_counter() - start
    inference_figures = throughput(1, inference_batches, [len(ids) for ids in inference_ids], inference_seconds)

    report = dict(like)
    report.update(
        tool=f"PyTorch {torch.__version__} + transformers {transformers.__version__}",
        threads=torch.get_num_threads(),
        precision=precision,
        train=train_figures,
        inference=inference_figures,
        peak_rss_train_mib=peak_train,
        peak_rss_mib=peak_rss_mib(),
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
