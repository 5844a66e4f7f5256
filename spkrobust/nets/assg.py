"""ASSG: the adaptive-sharpness surrogate gradient, its shapes and its per-attack state.

Paper: Wang et al., "Towards Reliable Evaluation of Adversarial Robustness for Spiking Neural
Networks", arXiv 2512.22522.  Code: github.com/craree/Towards-Reliable-Evaluation-of-Adversarial-
Robustness-for-Spiking-Neural-Networks, ``my_node.py`` (``ASSGrad``, ``ASSGrad_T/_R/_S/_G``) and
``attack.py`` (``ASSG_SAPGD``: the state is rebuilt per restart, ``eot_flag`` freezes it after the
first EOT draw).  :mod:`spkrobust.nets.estimators` runs it as backpropagation through time
(``grad: {mode: assg, shape, a, relax, beta1, beta2}``; defaults in the schema ``$defs.grad_spec``).

With ``x = v - θ`` the membrane before reset, per layer, time step, image and neuron the attack
keeps moving averages over its iterations of ``|x|`` and of its deviation,
``M ← β1·M + (1-β1)·|x|``, ``D ← β2·D + (1-β2)·||x| - M|`` (the new ``M``; start ``M = 1``,
``D = 0``), and the surrogate's sharpness is ``α = a'/(M + relax·D + 1e-4)``.  Shapes (``d s / d x``,
unit area, sharpness α): ``atan`` ``(α/2)/(1 + (παx/2)²)``, ``linear`` (triangle)
``max(0, α - α²|x|)``, ``rectangular`` ``α/2`` on ``|x| < 1/α``, ``sigmoid`` ``α·σ(αx)(1-σ(αx))``,
``gaussian`` ``α/√(2π)·exp(-(αx)²/2)`` — the reference's five.

``a`` is the sharpness level: the surrogate with ``α = a'/M`` puts the fraction ``2a`` of its mass
inside ``|x| < M`` (:func:`sharpness_scale`).  For ``atan`` this is the reference's
``a' = 2·tan(πa)/π`` exactly (default a = 0.425 as in its ``evaluate.py``; its ternary search ran over
0.35 … 0.49); for the other shapes the reference passes ``a'`` raw, here the same mass rule gives
``a'`` so that one ``a`` means the same for every shape (a departure, stated).

The state lives in :class:`ASSGState`, one per attacked model; the attack loops call
``begin_run`` (:func:`spkrobust.attacks.base.begin_run`) at every run and restart, which resets it,
and the estimated model freezes it on every EOT draw but the first of a step.  A state whose shape
does not match the batch (another subset of images) starts afresh. Bounded gradients
(:mod:`spkrobust.nets.bounded`) keep one state per image micro-batch and recompute checkpointed
pieces in the backward pass: a recomputation (:func:`spkrobust.nets.replay.replaying`) reads the
moments its forward pass left and does not update them again.
"""
from __future__ import annotations

import math

import torch

from spkrobust.config.vocab import ASSG_SHAPES
from spkrobust.errors import UserError
from spkrobust.nets.replay import replaying

EPS_SHARPNESS = 1e-4  # the reference's guard in α = a'/(M + relax·D + 1e-4)


def sharpness_scale(shape: str, a: float) -> float:
    """``a'`` such that the shape with sharpness ``α = a'/M`` has the fraction ``2a`` of its unit mass in ``|x| < M``."""
    a = float(a)
    if not 0.0 < a < 0.5:
        raise UserError(f"grad.a: must be in (0, 0.5), got {a!r}")
    if shape == "atan":
        return 2.0 * math.tan(math.pi * a) / math.pi
    if shape == "linear":
        return 1.0 - math.sqrt(1.0 - 2.0 * a)
    if shape == "rectangular":
        return 2.0 * a
    if shape == "sigmoid":
        return math.log((0.5 + a) / (0.5 - a))
    if shape == "gaussian":
        return math.sqrt(2.0) * float(torch.erfinv(torch.tensor(2.0 * a, dtype=torch.float64)))
    raise UserError(f"grad.shape: {shape!r} is not one of {', '.join(ASSG_SHAPES)}")


def shape_grad(shape: str, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``d s / d x`` of an ASSG shape at ``x = v - θ`` with (per element) sharpness ``alpha``."""
    if shape == "atan":
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
    if shape == "linear":
        return torch.clamp(alpha - alpha * alpha * x.abs(), min=0.0)
    if shape == "rectangular":
        return (alpha / 2) * (x.abs() < 1.0 / alpha).to(x.dtype)
    if shape == "sigmoid":
        s = torch.sigmoid(alpha * x)
        return alpha * s * (1 - s)
    if shape == "gaussian":
        return alpha / math.sqrt(2 * math.pi) * torch.exp(-0.5 * (alpha * x) ** 2)
    raise UserError(f"grad.shape: {shape!r} is not one of {', '.join(ASSG_SHAPES)}")


class ASSGState:
    """The moving averages ``(M, D)`` of one attack run, per (layer, time step); ``update`` False freezes them."""

    def __init__(self, shape: str, a: float, relax: float, beta1: float, beta2: float):
        self.shape, self.scale = shape, sharpness_scale(shape, a)
        self.relax, self.beta1, self.beta2 = float(relax), float(beta1), float(beta2)
        self.update = True
        self.moments: dict = {}

    def reset(self) -> None:
        """A new run: ``M = 1``, ``D = 0`` everywhere."""
        self.moments = {}
        self.update = True

    def dsdx(self, key, t: int, x: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative at ``x = v - θ`` (no graph) of layer ``key`` at step ``t``,
        after this pass's update of the moments (when not frozen)."""
        m, d = self.moments.get((key, t), (None, None))
        if m is None or m.shape != x.shape or m.device != x.device:
            m, d = torch.ones_like(x), torch.zeros_like(x)
        if self.update and not replaying():  # a recomputed chunk (checkpoint) reads, never updates twice
            ax = x.abs()
            m = self.beta1 * m + (1 - self.beta1) * ax
            d = self.beta2 * d + (1 - self.beta2) * (ax - m).abs()
            self.moments[(key, t)] = (m, d)
        alpha = self.scale / (m + self.relax * d + EPS_SHARPNESS)
        return shape_grad(self.shape, x, alpha)
