#!/usr/bin/env python3
"""PyTorch's figure beside benches/model.rs: one training step (forward, backward, SGD update) and
inference of all-MiniLM-L6-v2 at batch 16 x 40 tokens on the CPU, same shapes as bertlab's bench.

    python3 scripts/bench_model_pytorch.py --threads 2
"""
import argparse
import os
import statistics
import time

import torch
import transformers
from transformers import BertForSequenceClassification

BATCH, LENGTH, WARMUP, ITERATIONS = 16, 40, 3, 20

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
arguments = parser.parse_args()
torch.set_num_threads(arguments.threads)
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
directory = os.path.join(root, "assets", "models", "all-MiniLM-L6-v2")
model = BertForSequenceClassification.from_pretrained(directory, num_labels=3)
generator = torch.Generator().manual_seed(0)
ids = torch.randint(1000, model.config.vocab_size, (BATCH, LENGTH), generator=generator)
ids[:, 0], ids[:, -1] = 101, 102
mask = torch.ones_like(ids)
labels = torch.arange(BATCH) % 3
print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}, "
      f"all-MiniLM-L6-v2, batch {BATCH} x {LENGTH} tokens, threads {arguments.threads}")

model.eval()
times = []
with torch.no_grad():
    for iteration in range(WARMUP + ITERATIONS):
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask).logits.numpy()
        if iteration >= WARMUP:
            times.append(time.perf_counter() - start)
seconds = statistics.median(times)
print(f"inference      {seconds * 1e3:8.1f} ms/batch  {BATCH / seconds:7.1f} samples/s")

model.train()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
times = []
for iteration in range(WARMUP + ITERATIONS):
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
    loss.backward()
    optimizer.step()
    if iteration >= WARMUP:
        times.append(time.perf_counter() - start)
seconds = statistics.median(times)
print(f"training step  {seconds * 1e3:8.1f} ms/batch  {BATCH / seconds:7.1f} samples/s")
