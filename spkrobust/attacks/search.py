"""HART's γ per source: a list ``grad: {mode: hart, gamma: [...]}`` tried member by member or searched.

HART's surrogate width γ is tuned per model in its paper (Hao et al., ICLR 2024: γ from 0.10 to
2.45).  In an ``ensemble`` a list of γ becomes one member per γ (:func:`expand_gamma`; the per-image
worst case over them is at least as strong as any single choice).  A single attack with a list
searches it (:func:`search_gamma`): the attack runs with each γ on the first
:data:`SEARCH_IMAGES` images, the γ with the lowest adversarial accuracy on the source wins (ties:
the earlier γ), and the attack then runs with it on every image.  The choice and the accuracies go
into the record (``info["grad_search"]``), next to the numbers.  The search slice is a slice of the
attacked images (``craft`` sees no others): choosing the attack's hyperparameter on them can only
make the attack stronger, never the source more robust.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from spkrobust.attacks.base import derive_seed, is_stochastic
from spkrobust.nets.estimators import parse_grad

SEARCH_IMAGES = 32  # images of the γ search slice
SEARCH_DRAWS = 8  # forward passes (summed logits) that judge a stochastic source on the slice


def gamma_list(spec: dict) -> tuple | None:
    """The γ list of an attack spec's ``grad`` (None when it has one γ or no hart grad)."""
    g = spec.get("grad")
    if g is None:
        return None
    gs = parse_grad(g)
    return gs.gamma if gs.mode == "hart" and isinstance(gs.gamma, tuple) else None


def with_gamma(spec: dict, gamma: float) -> dict:
    """``spec`` with its hart grad at one ``gamma``."""
    grad = parse_grad(spec["grad"]).as_dict()
    return {**spec, "grad": {**grad, "gamma": float(gamma)}}


def expand_gamma(members: list) -> list:
    """An ensemble's member list with every γ list replaced by one member per γ (a given ``name``
    gets the suffix ``-g<γ>``)."""
    out = []
    for m in members:
        gl = gamma_list(m) if isinstance(m, dict) else None
        if gl is None:
            out.append(m)
            continue
        for g in gl:
            one = with_gamma(m, g)
            if m.get("name"):
                one["name"] = f"{m['name']}-g{g:g}"
            out.append(one)
    return out


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> float:
    draws = SEARCH_DRAWS if is_stochastic(model) else 1
    z = sum(model(x.to(device)) for _ in range(draws))
    return float((z.argmax(1).cpu() == y).float().mean())


def search_gamma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict, eps: float, *, craft: Callable,
                 seed: int, device, **kw) -> tuple[float, dict]:
    """``(chosen γ, record)`` for ``spec`` (with a γ list) on the first :data:`SEARCH_IMAGES` images;
    ``craft(model, x, y, spec, eps, seed=, device=, **kw)`` crafts one attack."""
    n = min(len(x), SEARCH_IMAGES)
    xs, ys = x[:n], y[:n]
    acc = {}
    for i, g in enumerate(gamma_list(spec)):
        xa, _ = craft(model, xs, ys, with_gamma(spec, g), eps, seed=derive_seed(seed, "gamma", i), device=device, **kw)
        torch.manual_seed(derive_seed(seed, "gamma-judge"))
        acc[g] = _accuracy(model, xa, ys, device)
    best = min(acc, key=lambda g: acc[g])  # the first of the lowest (dicts keep the list's order)
    return best, {"gamma": best, "images": n, "adv_acc": {f"{g:g}": a for g, a in acc.items()}}
