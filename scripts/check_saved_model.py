#!/usr/bin/env python3
"""Checks that transformers loads a model bertlab saved and predicts what bertlab predicts.

    BERTLAB_KEEP_SAVED_MODEL=/tmp/saved cargo test --release --test model save_then_load
    python3 scripts/check_saved_model.py /tmp/saved

The directory holds the saved model and bertlab-logits.json (sentences and bertlab's logits).
Needs torch and transformers; CI does not run it.
"""
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

directory = sys.argv[1]
model, info = AutoModelForSequenceClassification.from_pretrained(directory, output_loading_info=True)
model.eval()
problems = {kind: keys for kind, keys in info.items() if keys}
if problems:
    sys.exit(f"transformers reports {problems}")
with open(f"{directory}/bertlab-logits.json") as handle:
    record = json.load(handle)
tokenizer = AutoTokenizer.from_pretrained(directory)
encoded = tokenizer(record["sentences"], padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**encoded).logits
expected = torch.tensor(record["logits"])
difference = (logits - expected).abs().max().item()
same_predictions = bool((logits.argmax(-1) == expected.argmax(-1)).all())
print(f"{type(model).__name__}: no missing or unexpected keys; logits within {difference:.2e} of bertlab; "
      f"same predictions: {same_predictions}; labels {model.config.id2label}")
if difference > 1e-5 or not same_predictions:
    sys.exit(1)
