"""A listed estimator parameter per source: HART's γ and ASSG's a, tried member by member or searched.

HART's surrogate width γ is tuned per model in its paper (Hao et al., ICLR 2024: γ from 0.10 to
2.45); ASSG's sharpness level a by a ternary search over 0.35 … 0.49 in its code (Wang et al.,
arXiv 2512.22522; craree/…, ``evaluate.py``).  A list there (``grad: {mode: hart, gamma: [...]}``,
``grad: {mode: assg, a: [...]}``; :data:`spkrobust.nets.gradspec.LISTABLE`) is used in two ways.
In an ``ensemble`` it becomes one member per value (:func:`expand_lists`; the per-image worst case
over them is at least as strong as any single choice).  A single attack searches it
(:func:`search_value`): the attack runs with each value on the first :data:`SEARCH_IMAGES` images,
the value with the lowest adversarial accuracy on the source wins (ties: the earlier one), and the
attack then runs with it on every image — a grid over the listed values, not the reference's
ternary search.  The choice and the accuracies go into the record (``info["grad_search"]``), next
to the numbers.  The search slice is a slice of the attacked images (``craft`` sees no others):
choosing an attack's hyperparameter on them can only make the attack stronger, never the source
more robust.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from spkrobust.attacks.base import derive_seed, is_stochastic
from spkrobust.nets.gradspec import LISTABLE, parse_grad

SEARCH_IMAGES = 32  # images of the search slice
SEARCH_DRAWS = 8  # forward passes (summed logits) that judge a stochastic source on the slice


def listed(spec: dict) -> tuple[str, tuple] | None:
    """``(key, values)`` of the listed parameter of an attack spec's ``grad`` (None when nothing is listed)."""
    g = spec.get("grad")
    if g is None:
        return None
    gs = parse_grad(g)
    key = LISTABLE.get(gs.mode)
    return (key, getattr(gs, key)) if key and isinstance(getattr(gs, key), tuple) else None


def with_value(spec: dict, key: str, value: float) -> dict:
    """``spec`` with its grad's listed ``key`` at one ``value``."""
    grad = parse_grad(spec["grad"]).as_dict()
    return {**spec, "grad": {**grad, key: float(value)}}


def expand_lists(members: list) -> list:
    """An ensemble's member list with every listed parameter replaced by one member per value (a
    given ``name`` gets the suffix ``-g<γ>`` / ``-a<a>``)."""
    out = []
    for m in members:
        lv = listed(m) if isinstance(m, dict) else None
        if lv is None:
            out.append(m)
            continue
        key, values = lv
        for v in values:
            one = with_value(m, key, v)
            if m.get("name"):
                one["name"] = f"{m['name']}-{key[0]}{v:g}"
            out.append(one)
    return out


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> float:
    draws = SEARCH_DRAWS if is_stochastic(model) else 1
    z = sum(model(x.to(device)) for _ in range(draws))
    return float((z.argmax(1).cpu() == y).float().mean())


def search_value(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict, eps: float, *, craft: Callable,
                 seed: int, device, **kw) -> tuple[dict, dict]:
    """``(spec with the chosen value, record)`` for ``spec`` (with a listed parameter) on the first
    :data:`SEARCH_IMAGES` images; ``craft(model, x, y, spec, eps, seed=, device=, **kw)`` crafts one attack."""
    key, values = listed(spec)
    n = min(len(x), SEARCH_IMAGES)
    xs, ys = x[:n], y[:n]
    acc = {}
    for i, v in enumerate(values):
        xa, _ = craft(model, xs, ys, with_value(spec, key, v), eps, seed=derive_seed(seed, "search", i), device=device,
                      **kw)
        torch.manual_seed(derive_seed(seed, "search-judge"))
        acc[v] = _accuracy(model, xa, ys, device)
    best = min(acc, key=lambda v: acc[v])  # the first of the lowest (dicts keep the list's order)
    return with_value(spec, key, best), {"key": key, "value": best, "images": n,
                                         "adv_acc": {f"{v:g}": a for v, a in acc.items()}}
