#!/usr/bin/env python3
"""Writes tests/fixtures/adamw-torch.json: a toy problem optimised by torch.optim.AdamW with
transformers' linear warmup/decay schedule and clip_grad_norm_, for tests/train.rs to compare
bertlab's optimizer with (to 1e-6).

    python3 scripts/make_optimizer_fixture.py   # needs torch and transformers
"""
import json
import os

import torch
from transformers import get_linear_schedule_with_warmup

torch.manual_seed(0)
weight = torch.randn(3, 4) * 0.5
bias = torch.randn(3) * 0.1
scale = 1.0 + torch.randn(4) * 0.1
inputs = torch.randn(8, 4)
targets = torch.randn(8, 3)
init = {"layer.weight": weight.tolist(), "layer.bias": bias.tolist(), "norm.LayerNorm.weight": scale.tolist()}

params = {name: torch.tensor(value, requires_grad=True) for name, value in init.items()}
decay = [params["layer.weight"]]
no_decay = [params["layer.bias"], params["norm.LayerNorm.weight"]]
peak, weight_decay, max_norm, total, warmup = 0.05, 0.1, 0.5, 30, 3
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
    lr=peak, betas=(0.9, 0.999), eps=1e-8,
)
schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
losses, norms, rates = [], [], []
for step in range(total):
    optimizer.zero_grad()
    prediction = (inputs * params["norm.LayerNorm.weight"]) @ params["layer.weight"].T + params["layer.bias"]
    loss = ((prediction - targets) ** 2).mean()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
    rates.append(optimizer.param_groups[0]["lr"])
    optimizer.step()
    schedule.step()
    losses.append(loss.item())
    norms.append(norm.item())

fixture = {
    "peak_learning_rate": peak, "weight_decay": weight_decay, "max_grad_norm": max_norm,
    "total_steps": total, "warmup_steps": warmup,
    "inputs": inputs.tolist(), "targets": targets.tolist(), "init": init,
    "losses": losses, "norms": norms, "learning_rates": rates,
    "final": {name: value.detach().tolist() for name, value in params.items()},
    "torch": torch.__version__,
}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "adamw-torch.json")
with open(path, "w") as handle:
    json.dump(fixture, handle, indent=1)
print("wrote", os.path.normpath(path))
