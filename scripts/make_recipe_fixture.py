#!/usr/bin/env python3
"""Writes tests/fixtures/recipes-torch.json: two toy problems (the regression of
make_optimizer_fixture.py and a 3-class classifier) optimised by torch.optim.AdamW under each of
transformers' learning-rate schedules (linear, constant, cosine, polynomial, inverse_sqrt, with and
without warmup), AdamW betas/epsilon, weight decay on every parameter or not on biases and
LayerNorm weights, per-parameter learning-rate scales, torch.nn.utils.clip_grad_norm_ (or none),
and F.cross_entropy with label smoothing and class weights, so that the Rust tests can compare
bertlab's training recipes with what PyTorch computes (to 1e-6).

    python3 scripts/make_recipe_fixture.py   # needs torch and transformers

Each case records, per step, the learning rate of the groups at scale 1 (read before
optimizer.step()), the loss and the gradient norm before clipping, and the parameters after the
last step. A null schedule parameter means transformers' default, which is exercised by not
passing it.
"""
import json
import os

import torch
import torch.nn.functional as F
import transformers
from transformers import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
)

torch.manual_seed(0)
# The regression problem: drawn first, in the same order as make_optimizer_fixture.py (same values).
weight = torch.randn(3, 4) * 0.5
bias = torch.randn(3) * 0.1
scale = 1.0 + torch.randn(4) * 0.1
inputs = torch.randn(8, 4)
targets = torch.randn(8, 3)
regression = {
    "inputs": inputs.tolist(),
    "targets": targets.tolist(),
    "init": {"layer.weight": weight.tolist(), "layer.bias": bias.tolist(), "norm.LayerNorm.weight": scale.tolist()},
}
# The classification problem: every class present (3, 3 and 2 examples).
class_inputs = torch.randn(8, 4)
labels = (torch.arange(8) % 3)[torch.randperm(8)]
classifier_weight = torch.randn(3, 4) * 0.5
classifier_bias = torch.randn(3) * 0.1
class_weights = [0.6, 1.0, 1.8]
classification = {
    "inputs": class_inputs.tolist(),
    "labels": labels.tolist(),
    "class_weights": class_weights,
    "init": {"classifier.weight": classifier_weight.tolist(), "classifier.bias": classifier_bias.tolist()},
}


def case(name, problem="regression", schedule="linear", **settings):
    recipe = {
        "name": name, "problem": problem, "schedule": schedule,
        "peak_learning_rate": 0.05, "total_steps": 30, "warmup_steps": 3,
        "cosine_cycles": None, "polynomial_power": None, "polynomial_end_learning_rate": None,
        "inverse_sqrt_timescale": None,
        "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.1,
        "weight_decay_scope": "standard", "learning_rate_scales": None,
        "max_grad_norm": 1.0, "label_smoothing": 0.0, "use_class_weights": False,
    }
    unknown = set(settings) - set(recipe) - {"steps_run"}
    assert not unknown, unknown
    recipe.update(settings)
    return recipe


CASES = [
    case("linear_betas_all_unclipped", beta1=0.9, beta2=0.98, epsilon=1e-6, weight_decay_scope="all", max_grad_norm=0.0),
    case("constant_seed_recipe", schedule="constant", warmup_steps=0, weight_decay_scope="all", weight_decay=0.01,
         max_grad_norm=0.0),
    case("constant_warmup_clipped", schedule="constant", warmup_steps=5, max_grad_norm=0.5),
    case("cosine_default_cycles", schedule="cosine"),
    case("cosine_one_and_a_half_cycles", schedule="cosine", cosine_cycles=1.5),
    case("polynomial_squared", schedule="polynomial", polynomial_power=2.0, polynomial_end_learning_rate=1e-3),
    case("polynomial_defaults_past_total", schedule="polynomial", total_steps=20, steps_run=25),
    case("inverse_sqrt_default_timescale", schedule="inverse_sqrt", warmup_steps=4),
    case("inverse_sqrt_timescale_7_no_warmup", schedule="inverse_sqrt", warmup_steps=0, inverse_sqrt_timescale=7),
    case("classification_smoothed", problem="classification", label_smoothing=0.1),
    case("classification_smoothed_weighted_cosine", problem="classification", schedule="cosine", label_smoothing=0.2,
         use_class_weights=True, max_grad_norm=0.5),
    case("linear_learning_rate_scales",
         learning_rate_scales={"layer.weight": 0.5, "layer.bias": 0.25, "norm.LayerNorm.weight": 1.0}),
]


def make_schedule(optimizer, recipe):
    warmup, total, kind = recipe["warmup_steps"], recipe["total_steps"], recipe["schedule"]
    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total)
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup) if warmup > 0 else get_constant_schedule(optimizer)
    if kind == "cosine":
        extra = {} if recipe["cosine_cycles"] is None else {"num_cycles": recipe["cosine_cycles"]}
        return get_cosine_schedule_with_warmup(optimizer, warmup, total, **extra)
    if kind == "polynomial":
        extra = {}
        if recipe["polynomial_power"] is not None:
            extra["power"] = recipe["polynomial_power"]
        if recipe["polynomial_end_learning_rate"] is not None:
            extra["lr_end"] = recipe["polynomial_end_learning_rate"]
        return get_polynomial_decay_schedule_with_warmup(optimizer, warmup, total, **extra)
    if kind == "inverse_sqrt":
        extra = {} if recipe["inverse_sqrt_timescale"] is None else {"timescale": recipe["inverse_sqrt_timescale"]}
        return get_inverse_sqrt_schedule(optimizer, warmup, **extra)
    raise ValueError(kind)


def explicit_cross_entropy(logits, gold, weight, smoothing):
    """F.cross_entropy(mean, weight, label_smoothing) written out, to check what the fixture documents."""
    log_probs = torch.log_softmax(logits, dim=-1)
    classes = logits.shape[1]
    w = torch.ones(classes) if weight is None else weight
    picked = w[gold]
    nll = -(picked * log_probs[torch.arange(len(gold)), gold]).sum() / picked.sum()
    smooth = -(log_probs * w).sum() / classes / picked.sum()
    return (1 - smoothing) * nll + smoothing * smooth


def run(recipe):
    problem = regression if recipe["problem"] == "regression" else classification
    params = {name: torch.tensor(value, requires_grad=True) for name, value in problem["init"].items()}
    scales = recipe["learning_rate_scales"] or {}
    peak = recipe["peak_learning_rate"]
    groups = {}  # (decay, scale) -> param group, in the order parameters first reach them
    for name, param in params.items():
        no_decay = recipe["weight_decay_scope"] == "standard" and (name.endswith("bias") or "LayerNorm" in name)
        decay = 0.0 if no_decay else recipe["weight_decay"]
        factor = scales.get(name, 1.0)
        group = groups.setdefault((decay, factor), {"params": [], "weight_decay": decay, "lr": peak * factor})
        group["params"].append(param)
    # lr=peak matters: get_polynomial_decay_schedule_with_warmup reads optimizer.defaults["lr"].
    optimizer = torch.optim.AdamW(
        list(groups.values()), lr=peak, betas=(recipe["beta1"], recipe["beta2"]), eps=recipe["epsilon"],
    )
    unit_groups = [index for index, (_, factor) in enumerate(groups) if factor == 1.0]
    assert unit_groups, "no parameter group at scale 1"
    schedule = make_schedule(optimizer, recipe)
    if recipe["problem"] == "classification":
        x = torch.tensor(problem["inputs"])
        gold = torch.tensor(problem["labels"])
        weight = torch.tensor(problem["class_weights"]) if recipe["use_class_weights"] else None
    else:
        x, y = torch.tensor(problem["inputs"]), torch.tensor(problem["targets"])

    losses, norms, rates = [], [], []
    for _ in range(recipe.get("steps_run", recipe["total_steps"])):
        optimizer.zero_grad()
        if recipe["problem"] == "classification":
            logits = x @ params["classifier.weight"].T + params["classifier.bias"]
            loss = F.cross_entropy(logits, gold, weight=weight, label_smoothing=recipe["label_smoothing"])
            check = explicit_cross_entropy(logits.detach(), gold, weight, recipe["label_smoothing"])
            assert abs(check.item() - loss.item()) < 1e-6, (check.item(), loss.item())
        else:
            prediction = (x * params["norm.LayerNorm.weight"]) @ params["layer.weight"].T + params["layer.bias"]
            loss = ((prediction - y) ** 2).mean()
        loss.backward()
        if recipe["max_grad_norm"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(list(params.values()), recipe["max_grad_norm"])
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params.values()])
        step_rates = {optimizer.param_groups[index]["lr"] for index in unit_groups}
        assert len(step_rates) == 1, step_rates
        rates.append(float(step_rates.pop()))
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        norms.append(norm.item())
    recipe = dict(recipe, learning_rates=rates, losses=losses, norms=norms)
    recipe["final"] = {name: value.detach().tolist() for name, value in params.items()}
    return recipe


fixture = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "regression": regression,
    "classification": classification,
    "cases": [run(recipe) for recipe in CASES],
}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "recipes-torch.json")
with open(path, "w") as handle:
    json.dump(fixture, handle, indent=1)
print("wrote", os.path.normpath(path))
