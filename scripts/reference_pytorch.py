#!/usr/bin/env python3
"""The PyTorch + transformers reference for `bertlab run`: fine-tunes the same model on the same
split with the same hyperparameters, the way a careful Python user would (AdamW, by default without
decay on biases and LayerNorm weights, transformers' warmup-then-schedule learning rate, gradient
clipping, dynamic padding, validation every epoch (and every `eval_every_steps` optimizer steps),
the best evaluation by macro-F1 kept and evaluated on the test split).

    bertlab data experiments/quickstart.toml --export /tmp/quickstart-split
    python3 scripts/reference_pytorch.py experiments/quickstart.toml /tmp/quickstart-split --threads 2
    python3 scripts/reference_pytorch.py experiments/quickstart.toml /tmp/quickstart-split --seed-style

Hyperparameters come from the experiment file's [train] and [model] tables (grids are not
supported: give a file with one configuration), with bertlab's defaults and meanings:
max_length, batch_size, learning_rate, epochs, seed;
learning_rate_schedule ("linear" | "constant" | "cosine" | "polynomial" | "inverse_sqrt": the
warmup, when there is one, then transformers' get_linear_schedule_with_warmup,
get_constant_schedule(_with_warmup), get_cosine_schedule_with_warmup(cosine_cycles),
get_polynomial_decay_schedule_with_warmup(polynomial_end_learning_rate, polynomial_power),
get_inverse_sqrt_schedule(inverse_sqrt_timescale; unset: the function's default));
warmup_steps (> 0: the warmup) else ceil(warmup_ratio * total_steps);
adam_beta1, adam_beta2, adam_epsilon, weight_decay;
weight_decay_scope ("standard": no decay on parameters whose name ends in "bias" or contains
"LayerNorm"; "all": every parameter decays);
label_smoothing (the training loss only; validation and test losses are plain cross-entropy);
class_weights ("balanced": the training loss weighs class c by n / (classes * count_c), 0 for a
class without training examples);
max_grad_norm (0: no clipping);
layer_learning_rate_decay (head and pooler at the full rate, encoder layer i of L at
factor ** (L - i), the embeddings at factor ** (L + 1));
freeze ("none" | "embeddings" | N: the embeddings and encoder layers 0..N-1 get no gradient and
no optimizer state);
eval_every_steps (0: off; else validate also after every N-th optimizer step, one evaluation when
it falls on an epoch's end; every evaluation is a candidate for the kept weights, the first of
equal macro-F1s wins).
[data] max_train_examples needs nothing here: the split `bertlab data --export` writes is already
sampled. Other [train] keys (gradient_accumulation, early_stopping_patience, selection_metric,
length_bucketing, precision, ...) are not reproduced: a warning on stderr names those set.

Needs torch, transformers and scikit-learn-free Python 3.11 (tomllib). Prints one JSON object:
validation and test figures at the kept evaluation (best_epoch, 1-based, and best_step, the
optimizer steps taken then), one row per evaluation (epoch in progress, step), training samples/s
(training steps only, as bertlab's metrics.csv).
"""
import argparse
import csv
import json
import math
import os
import random
import re
import sys
import time
import tomllib

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
)

# The [train] keys this script reproduces; any other key set in the file is reported as ignored.
READ_KEYS = {
    "max_length", "batch_size", "learning_rate", "epochs", "weight_decay", "warmup_ratio", "warmup_steps",
    "max_grad_norm", "seed", "learning_rate_schedule", "cosine_cycles", "polynomial_power",
    "polynomial_end_learning_rate", "inverse_sqrt_timescale", "adam_beta1", "adam_beta2", "adam_epsilon",
    "weight_decay_scope", "label_smoothing", "class_weights", "layer_learning_rate_decay", "freeze",
    "eval_every_steps", "device",
}


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


def make_schedule(optimizer, settings, warmup, total_steps):
    """transformers' schedule for `learning_rate_schedule`, with bertlab's defaults (those of the
    functions); an unset inverse_sqrt_timescale is not passed, so the function picks it."""
    kind = settings.get("learning_rate_schedule", "linear")
    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup) if warmup > 0 else get_constant_schedule(optimizer)
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps, num_cycles=settings.get("cosine_cycles", 0.5))
    if kind == "polynomial":
        return get_polynomial_decay_schedule_with_warmup(
            optimizer, warmup, total_steps,
            lr_end=settings.get("polynomial_end_learning_rate", 1e-7), power=settings.get("polynomial_power", 1.0),
        )
    if kind == "inverse_sqrt":
        timescale = settings.get("inverse_sqrt_timescale")
        extra = {} if timescale is None else {"timescale": timescale}
        return get_inverse_sqrt_schedule(optimizer, warmup, **extra)
    sys.exit(f"unknown learning_rate_schedule {kind!r}")


def layer_depth(name, prefix, layers):
    """How many decay factors the parameter's learning rate takes under layer_learning_rate_decay,
    and whether `freeze` can reach it: (depth, encoder layer index or None, is_embedding)."""
    if name.startswith(f"{prefix}.embeddings."):
        return layers + 1, None, True
    match = re.match(rf"{re.escape(prefix)}\.encoder\.layer\.(\d+)\.", name)
    if match:
        index = int(match.group(1))
        return layers - index, index, False
    return 0, None, False  # the pooler and the classifier head


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
    # The kept evaluation is the best by macro-F1, bertlab's default selection_metric.
    ignored = sorted(
        key for key in set(train_settings) - READ_KEYS
        if not (key == "selection_metric" and train_settings[key] == "macro_f1")
    )
    if ignored:
        print(f"warning: [train] {', '.join(ignored)} not reproduced by this script", file=sys.stderr)
    model_path = os.path.join(os.path.dirname(os.path.abspath(args.experiment)), experiment["model"]["path"])
    max_length = train_settings.get("max_length", 128)
    batch_size = train_settings.get("batch_size", 16)
    learning_rate = train_settings.get("learning_rate", 2e-5)
    epochs = train_settings.get("epochs", 3)
    weight_decay = train_settings.get("weight_decay", 0.01)
    weight_decay_scope = train_settings.get("weight_decay_scope", "standard")
    if weight_decay_scope not in ("standard", "all"):
        sys.exit(f"unknown weight_decay_scope {weight_decay_scope!r}")
    warmup_ratio = train_settings.get("warmup_ratio", 0.0)
    warmup_steps = train_settings.get("warmup_steps", 0)
    betas = (train_settings.get("adam_beta1", 0.9), train_settings.get("adam_beta2", 0.999))
    epsilon = train_settings.get("adam_epsilon", 1e-8)
    max_grad_norm = train_settings.get("max_grad_norm", 1.0)
    label_smoothing = train_settings.get("label_smoothing", 0.0)
    class_weight_policy = train_settings.get("class_weights", "none")
    if class_weight_policy not in ("none", "balanced"):
        sys.exit(f"unknown class_weights {class_weight_policy!r}")
    layer_decay = train_settings.get("layer_learning_rate_decay", 1.0)
    freeze = train_settings.get("freeze", "none")
    eval_every_steps = train_settings.get("eval_every_steps", 0)
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
    # float32 whatever the checkpoint holds (transformers 5 loads the checkpoint's dtype by default).
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(classes), dtype=torch.float32)

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

    # Class weights of the training loss (bertlab's `balanced`: n / (classes * count), 0 when absent).
    class_weights = None
    if class_weight_policy == "balanced":
        counts = [0] * len(classes)
        for _, _, label in train_encoded:
            counts[label] += 1
        class_weights = torch.tensor(
            [len(train_encoded) / (len(classes) * count) if count else 0.0 for count in counts], dtype=torch.float32
        )

    # Freezing, layer-wise learning rates and weight decay: one AdamW group per (decay, rate).
    layers = model.config.num_hidden_layers
    prefix = model.base_model_prefix
    if freeze == "none":
        frozen_layers, freeze_embeddings = 0, False
    elif freeze == "embeddings":
        frozen_layers, freeze_embeddings = 0, True
    elif isinstance(freeze, int) and not isinstance(freeze, bool) and 1 <= freeze <= layers:
        frozen_layers, freeze_embeddings = freeze, True
    else:
        sys.exit(f"freeze must be \"none\", \"embeddings\" or an integer from 1 to {layers}, found {freeze!r}")
    groups = {}
    frozen = 0
    for name, parameter in model.named_parameters():
        depth, index, is_embedding = layer_depth(name, prefix, layers)
        if (is_embedding and freeze_embeddings) or (index is not None and index < frozen_layers):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
            continue
        no_decay = weight_decay_scope == "standard" and (name.endswith("bias") or "LayerNorm" in name)
        decay = 0.0 if no_decay else weight_decay
        scale = layer_decay**depth
        group = groups.setdefault((decay, scale), {"params": [], "weight_decay": decay, "lr": learning_rate * scale})
        group["params"].append(parameter)
    trainable = [parameter for group in groups.values() for parameter in group["params"]]
    # lr=learning_rate: get_polynomial_decay_schedule_with_warmup reads optimizer.defaults["lr"].
    optimizer = torch.optim.AdamW(list(groups.values()), lr=learning_rate, betas=betas, eps=epsilon)
    steps_per_epoch = math.ceil(len(train_encoded) / batch_size)
    total_steps = steps_per_epoch * epochs
    warmup = warmup_steps if warmup_steps > 0 else math.ceil(warmup_ratio * total_steps)
    schedule = make_schedule(optimizer, train_settings, warmup, total_steps)

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
    step = 0

    def validate(epoch, examples, loss_sum, seconds):
        """One evaluation: its row (epoch in progress, 1-based; optimizer steps so far; the epoch's
        training loss and speed so far), and the kept weights when it beats every earlier one."""
        nonlocal best_state, best_f1
        figures = evaluate(validation_encoded)
        figures.update(
            epoch=epoch + 1, step=step, train_loss=loss_sum / examples,
            train_samples_per_second=examples / seconds,
        )
        history.append(figures)
        print(json.dumps(figures), file=sys.stderr)
        if figures["macro_f1"] > best_f1:
            best_f1 = figures["macro_f1"]
            best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        model.train()

    for epoch in range(epochs):
        model.train()
        order = list(range(len(train_encoded)))
        random.shuffle(order)
        seconds = 0.0  # training time of this epoch, evaluations excluded
        loss_sum, examples = 0.0, 0
        for start in range(0, len(order), batch_size):
            segment_start = time.perf_counter()
            input_ids, mask, gold = collate([train_encoded[i] for i in order[start : start + batch_size]])
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits, gold, weight=class_weights, label_smoothing=label_smoothing)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            loss_sum += loss.item() * len(gold)
            examples += len(gold)
            seconds += time.perf_counter() - segment_start
            epoch_end = start + batch_size >= len(order)
            if eval_every_steps > 0 and step % eval_every_steps == 0 and not epoch_end:
                validate(epoch, examples, loss_sum, seconds)
        train_seconds += seconds
        validate(epoch, examples, loss_sum, seconds)
    model.load_state_dict(best_state)
    best = max(history, key=lambda row: row["macro_f1"])  # the first of equals
    result = {
        "model": model_path,
        "train_examples": len(train_encoded),
        "threads": args.threads,
        "seed_style": args.seed_style,
        "torch": torch.__version__,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "frozen_parameters": frozen,
        "best_epoch": best["epoch"],
        "best_step": best["step"],
        "validation": {key: best[key] for key in ("loss", "accuracy", "macro_f1")},
        "test": evaluate(test_encoded) if test_encoded else None,
        "train_samples_per_second": len(train_encoded) * epochs / train_seconds,
        "seconds_total": time.perf_counter() - started,
        "epochs": history,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
