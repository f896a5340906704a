#!/usr/bin/env python3
"""PyTorch eager + transformers on the fixed-shape GPU work that `bertlab bench --sequence-length`
measures, for the comparison of `scripts/gpu-check.sh`:

    python3 scripts/gpu_bench_pytorch.py --model DIR --batch-size 32 --sequence-length 128 \
        --steps 300 --precision bf16

- the model: DIR's config.json with DIR's weights when it has model.safetensors, else random
  weights (transformers' initialisation), a 3-class sequence-classification head, train mode
  (the config's dropout);
- training: `--warmup-steps` untimed then `--steps` timed steps of AdamW (weight decay 0.01, none
  on biases and LayerNorm weights), gradients clipped to norm 1.0, on batches of random token ids
  (every row `--sequence-length` tokens, no padding), cross-entropy in fp32;
- bf16: forward under `torch.autocast("cuda", dtype=torch.bfloat16)` (bf16 matrix products, fp32
  weights and optimizer), as bertlab's `precision = "bf16"`;
- inference: the same batches in eval mode under `torch.inference_mode()`;
- GPU memory: torch.cuda.max_memory_allocated (what PyTorch's tensors held at peak) and
  max_memory_reserved (what its caching allocator took from the driver).
Prints one JSON object.
"""
import argparse
import json
import os
import time

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--inference-batches", type=int, default=50)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cuda")
    config = AutoConfig.from_pretrained(args.model, num_labels=3)
    if os.path.exists(os.path.join(args.model, "model.safetensors")):
        model = AutoModelForSequenceClassification.from_pretrained(args.model, config=config)
        weights = "checkpoint"
    else:
        model = AutoModelForSequenceClassification.from_config(config)
        weights = "random"
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
    )
    total = args.warmup_steps + args.steps
    generator = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (total, args.batch_size, args.sequence_length), generator=generator)
    labels = torch.randint(0, 3, (total, args.batch_size), generator=generator)
    ids, labels = ids.to(device), labels.to(device)
    mask = torch.ones(args.batch_size, args.sequence_length, dtype=torch.long, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    torch.cuda.reset_peak_memory_stats()
    losses = []
    start = None
    for step in range(total):
        if step == args.warmup_steps:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast:
            logits = model(input_ids=ids[step], attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[step])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == total - 1:
            losses.append(round(loss.item(), 4))
    torch.cuda.synchronize()
    train_seconds = time.perf_counter() - start
    allocated = torch.cuda.max_memory_allocated() / 2**20
    reserved = torch.cuda.max_memory_reserved() / 2**20

    model.eval()
    batches = min(args.inference_batches, total)
    with torch.inference_mode(), autocast:
        model(input_ids=ids[0], attention_mask=mask)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(batches):
            model(input_ids=ids[step], attention_mask=mask).logits.float().cpu()
        torch.cuda.synchronize()
    inference_seconds = time.perf_counter() - start

    print(json.dumps({
        "tool": f"PyTorch {torch.__version__} eager + transformers",
        "gpu": torch.cuda.get_device_name(0),
        "model": args.model,
        "weights": weights,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "sequence_length": args.sequence_length,
        "steps": args.steps,
        "train_samples_per_second": args.steps * args.batch_size / train_seconds,
        "inference_samples_per_second": batches * args.batch_size / inference_seconds,
        "losses_every_50_steps": losses,
        "max_memory_allocated_mib": allocated,
        "max_memory_reserved_mib": reserved,
    }))


if __name__ == "__main__":
    main()
