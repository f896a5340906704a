#!/usr/bin/env python3
"""Checks a finished run with transformers: loads runs/<hash>/model/ with
AutoModelForSequenceClassification (no missing or unexpected keys) and predicts every row of the
run's predictions.csv; probabilities must match bertlab's within 1e-4 and predictions must agree.
A pair run's rows are encoded as tokenizer(text, text_pair, truncation=True); a multi-label run
(config problem_type "multi_label_classification") is scored with a sigmoid per class and its
predicted sets at the run's threshold (spec.json, default 0.5), joined by its label_separator.

    python3 scripts/check_run_with_transformers.py runs/99df6044f01d [--max-length 64]
    bertlab predict 99df --input texts.csv --output out.csv
    python3 scripts/check_run_with_transformers.py runs/99df6044f01d --predictions out.csv

Needs torch and transformers; CI does not run it.
"""
import argparse
import csv
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("run")
parser.add_argument("--max-length", type=int, help="default: the run's spec.json")
parser.add_argument("--predictions", help="a CSV with text, predicted, probability_<class> columns (default: the run's predictions.csv)")
args = parser.parse_args()
with open(f"{args.run}/spec.json") as handle:
    spec = json.load(handle)
max_length = args.max_length or spec["train"]["max_length"]
threshold = spec["train"].get("threshold", 0.5)
separator = spec["data"].get("label_separator", "|")
model, info = AutoModelForSequenceClassification.from_pretrained(f"{args.run}/model", output_loading_info=True)
model.eval()
problems = {kind: keys for kind, keys in info.items() if keys}
if problems:
    sys.exit(f"transformers reports {problems}")
tokenizer = AutoTokenizer.from_pretrained(f"{args.run}/model")
with open(args.predictions or f"{args.run}/predictions.csv", newline="", encoding="utf-8") as handle:
    rows = list(csv.DictReader(handle))
labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
multi_label = model.config.problem_type == "multi_label_classification"
pairs = "text_pair" in rows[0]
worst, disagreements = 0.0, 0
with torch.no_grad():
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        texts = [row["text"] for row in chunk]
        second = [row["text_pair"] for row in chunk] if pairs else None
        encoded = tokenizer(texts, second, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        logits = model(**encoded).logits
        probabilities = logits.sigmoid() if multi_label else logits.softmax(-1)
        for row, values in zip(chunk, probabilities.tolist()):
            stored = [float(row[f"probability_{label}"]) for label in labels]
            worst = max(worst, max(abs(a - b) for a, b in zip(values, stored)))
            if multi_label:
                predicted = separator.join(label for label, value in zip(labels, values) if value >= threshold)
            else:
                predicted = labels[max(range(len(values)), key=values.__getitem__)]
            disagreements += predicted != row["predicted"]
print(f"{type(model).__name__} ({model.config.problem_type}{', pairs' if pairs else ''}): no missing or unexpected keys; {len(rows)} rows; probabilities within "
      f"{worst:.2e} of {args.predictions or 'predictions.csv'}; {disagreements} different predictions")
if worst > 1e-4 or disagreements:
    sys.exit(1)
