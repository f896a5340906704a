#!/usr/bin/env python3
"""The PyTorch + transformers reference for `bertlab run`: fine-tunes the same model on the same
split with the same hyperparameters, the way a careful Python user would (AdamW without decay on
biases and LayerNorm weights, linear warmup then decay, gradient clipping, dynamic padding,
validation every epoch, the best epoch by macro-F1 kept and evaluated on the test split).

    bertlab data experiments/quickstart.toml --export /tmp/quickstart-split
    python3 scripts/reference_pytorch.py experiments/quickstart.toml /tmp/quickstart-split --threads 2
    python3 scripts/reference_pytorch.py experiments/quickstart.toml /tmp/quickstart-split --seed-style

Hyperparameters come from the experiment file's [train] and [model] tables (grids are not
supported: give a file with one configuration). Needs torch, transformers and scikit-learn-free
Python 3.11 (tomllib). Prints one JSON object: validation and test figures at the kept epoch,
per-epoch figures, training samples/s (training steps only, as bertlab's metrics.csv).
"""
import argparse
import csv
import json
import math
import os
import random
import sys
import time
import tomllib

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup


def read_split(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def macro_f1_and_accuracy(gold, predicted, classes):
    present = sorted(set(gold) | set(predicted))
    f1s = []
    for label in present:
        tp = sum(1 for g, p in zip(gold, predicted) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, predicted) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, predicted) if g == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    accuracy = sum(1 for g, p in zip(gold, predicted) if g == p) / len(gold)
    return sum(f1s) / len(f1s), accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment")
    parser.add_argument("split", help="folder written by `bertlab data --export`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seed-style",
        action="store_true",
        help="the way the project's seed script did it: one tokenizer call per text, every text padded "
        "to 128 tokens (no dynamic padding), evaluation batches in file order",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with open(args.experiment, "rb") as handle:
        experiment = tomllib.load(handle)
    train_settings = experiment.get("train", {})
    model_path = os.path.join(os.path.dirname(os.path.abspath(args.experiment)), experiment["model"]["path"])
    max_length = train_settings.get("max_length", 128)
    batch_size = train_settings.get("batch_size", 16)
    learning_rate = train_settings.get("learning_rate", 2e-5)
    epochs = train_settings.get("epochs", 3)
    weight_decay = train_settings.get("weight_decay", 0.01)
    warmup_ratio = train_settings.get("warmup_ratio", 0.0)
    max_grad_norm = train_settings.get("max_grad_norm", 1.0)
    seed = train_settings.get("seed", 0)
    random.seed(seed)
    torch.manual_seed(seed)

    labels = experiment.get("labels")
    classes = [name for name, _ in sorted(labels.items(), key=lambda item: item[1])] if labels else None
    train = read_split(os.path.join(args.split, "train.csv"))
    validation = read_split(os.path.join(args.split, "validation.csv"))
    test_path = os.path.join(args.split, "test.csv")
    test = read_split(test_path) if os.path.exists(test_path) else []
    if classes is None:
        classes = sorted({label for _, label in train})
    class_id = {name: index for index, name in enumerate(classes)}

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(classes))

    def encode(rows):
        if args.seed_style:
            encoded = []
            for text, label in rows:
                one = tokenizer(text, truncation=True, max_length=128, padding="max_length")
                encoded.append((one["input_ids"], one["attention_mask"], class_id[label]))
            return encoded
        encoded = tokenizer([text for text, _ in rows], truncation=True, max_length=max_length)
        return [(ids, [1] * len(ids), class_id[label]) for ids, (_, label) in zip(encoded["input_ids"], rows)]

    train_encoded, validation_encoded, test_encoded = encode(train), encode(validation), encode(test)

    def collate(batch):
        length = max(len(ids) for ids, _, _ in batch)
        input_ids = torch.full((len(batch), length), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, (ids, attended, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = torch.tensor(attended)
        return input_ids, mask, torch.tensor([label for _, _, label in batch])

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(x in n for x in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(x in n for x in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(train_encoded) / batch_size)
    total_steps = steps_per_epoch * epochs
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total_steps), total_steps)

    @torch.no_grad()
    def evaluate(encoded):
        model.eval()
        order = list(range(len(encoded)))
        if not args.seed_style:
            order.sort(key=lambda i: len(encoded[i][0]))
        predicted = [0] * len(encoded)
        loss_sum = 0.0
        for start in range(0, len(order), 64):
            chunk = [encoded[i] for i in order[start : start + 64]]
            input_ids, mask, gold = collate(chunk)
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss_sum += torch.nn.functional.cross_entropy(logits, gold, reduction="sum").item()
            for i, guess in zip(order[start : start + 64], logits.argmax(-1).tolist()):
                predicted[i] = guess
        gold = [label for _, _, label in encoded]
        macro_f1, accuracy = macro_f1_and_accuracy(gold, predicted, len(classes))
        return {"loss": loss_sum / len(encoded), "accuracy": accuracy, "macro_f1": macro_f1}

    history, best_state, best_f1 = [], None, -1.0
    train_seconds = 0.0
    for epoch in range(epochs):
        model.train()
        order = list(range(len(train_encoded)))
        random.shuffle(order)
        epoch_start = time.perf_counter()
        loss_sum = 0.0
        for start in range(0, len(order), batch_size):
            input_ids, mask, gold = collate([train_encoded[i] for i in order[start : start + batch_size]])
            loss = torch.nn.functional.cross_entropy(model(input_ids=input_ids, attention_mask=mask).logits, gold)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            loss_sum += loss.item() * len(gold)
        seconds = time.perf_counter() - epoch_start
        train_seconds += seconds
        figures = evaluate(validation_encoded)
        figures.update(epoch=epoch + 1, train_loss=loss_sum / len(train_encoded), train_samples_per_second=len(train_encoded) / seconds)
        history.append(figures)
        print(json.dumps(figures), file=sys.stderr)
        if figures["macro_f1"] > best_f1:
            best_f1 = figures["macro_f1"]
            best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    model.load_state_dict(best_state)
    best = max(history, key=lambda row: (row["macro_f1"], -row["epoch"]))
    result = {
        "model": model_path,
        "train_examples": len(train_encoded),
        "threads": args.threads,
        "seed_style": args.seed_style,
        "torch": torch.__version__,
        "best_epoch": best["epoch"],
        "validation": {key: best[key] for key in ("loss", "accuracy", "macro_f1")},
        "test": evaluate(test_encoded) if test_encoded else None,
        "train_samples_per_second": len(train_encoded) * epochs / train_seconds,
        "seconds_total": time.perf_counter() - started,
        "epochs": history,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
