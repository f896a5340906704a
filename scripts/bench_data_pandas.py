#!/usr/bin/env python3
"""The Python reference for benches/data.rs: the same pipeline on the example corpus with pandas
and the transformers fast tokenizer. Times from after the imports to tokenized splits.

    python3 scripts/bench_data_pandas.py
"""
import io
import os
import statistics
import time

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "assets", "data", "tweets.csv")
MODEL = os.path.join(ROOT, "assets", "models", "all-MiniLM-L6-v2")
LABELS = {"negative": 0, "neutral": 1, "positive": 2}


def pipeline():
    with open(CORPUS, "rb") as handle:
        text = handle.read().decode("utf-8", errors="replace")
    frame = pd.read_csv(io.StringIO(text), dtype={"text": str, "sentiment": str})
    frame = frame[frame["confidence"] >= 0.6]
    frame = frame.assign(text=frame["text"].fillna("").str.strip(), sentiment=frame["sentiment"].str.strip())
    frame = frame[frame["text"] != ""]
    frame = frame.drop_duplicates(subset=["text", "sentiment"])
    conflicting = frame.groupby("text")["sentiment"].transform("nunique") > 1
    frame = frame[~conflicting]
    frame = frame[frame["sentiment"].isin(LABELS)]
    frame = frame.assign(label=frame["sentiment"].map(LABELS))
    generator = np.random.default_rng(0)
    parts = {"train": [], "validation": [], "test": []}
    for _, group in frame.groupby("label"):
        order = generator.permutation(len(group))
        n_validation = round(len(group) * 0.1)
        n_test = round(len(group) * 0.1)
        parts["validation"].append(group.iloc[order[:n_validation]])
        parts["test"].append(group.iloc[order[n_validation:n_validation + n_test]])
        parts["train"].append(group.iloc[order[n_validation + n_test:]])
    splits = {name: pd.concat(chunks) for name, chunks in parts.items()}
    cleaned = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokens = 0
    for split in splits.values():
        encoded = tokenizer(split["text"].tolist(), truncation=True, max_length=128)
        tokens += sum(len(ids) for ids in encoded["input_ids"])
    return cleaned, {name: len(split) for name, split in splits.items()}, tokens


times = []
for run in range(7):
    start = time.perf_counter()
    cleaned, sizes, tokens = pipeline()
    total = time.perf_counter() - start
    print(f"run {run}: {total:.3f} s (clean and split {cleaned - start:.3f} s, tokenize {total - (cleaned - start):.3f} s); "
          f"{sizes}, {tokens} tokens")
    times.append(total)
print(f"median {statistics.median(times):.3f} s after imports to tokenized splits")
