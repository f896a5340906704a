#!/usr/bin/env python3
"""Checks a finished run with transformers: loads runs/<hash>/model/ with
AutoModelForSequenceClassification (no missing or unexpected keys) and predicts every row of the
run's predictions.csv; probabilities must match bertlab's within 1e-4 and predictions must agree.

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
    max_length = args.max_length or json.load(handle)["train"]["max_length"]
model, info = AutoModelForSequenceClassification.from_pretrained(f"{args.run}/model", output_loading_info=True)
model.eval()
problems = {kind: keys for kind, keys in info.items() if keys}
if problems:
    sys.exit(f"transformers reports {problems}")
tokenizer = AutoTokenizer.from_pretrained(f"{args.run}/model")
with open(args.predictions or f"{args.run}/predictions.csv", newline="", encoding="utf-8") as handle:
    rows = list(csv.DictReader(handle))
labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
worst, disagreements = 0.0, 0
with torch.no_grad():
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        encoded = tokenizer([row["text"] for row in chunk], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        probabilities = model(**encoded).logits.softmax(-1)
        for row, values in zip(chunk, probabilities.tolist()):
            stored = [float(row[f"probability_{label}"]) for label in labels]
            worst = max(worst, max(abs(a - b) for a, b in zip(values, stored)))
            disagreements += labels[max(range(len(values)), key=values.__getitem__)] != row["predicted"]
print(f"{type(model).__name__}: no missing or unexpected keys; {len(rows)} rows; probabilities within "
      f"{worst:.2e} of {args.predictions or 'predictions.csv'}; {disagreements} different predictions")
if worst > 1e-4 or disagreements:
    sys.exit(1)
