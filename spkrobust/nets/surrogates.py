"""The triangle (piecewise-linear) surrogate derivative, the one torch form every backend shares.

``triangle(x, alpha, width) = alpha/width · max(0, 1 - |x|/width)``: the studies' ``LinearSpike``
(alpha 0.3, width θ, on ``x = v - θ``; :class:`spkrobust.nets.neurons.PiecewiseLinear`), the
attack-time ``linear`` surrogate (alpha 1, on ``u = v/θ - 1``; :func:`spkrobust.nets.estimators.
surrogate_grad`) and HART's per-step triangle, and the fused backend's torch loop
(:mod:`spkrobust.nets.fused`, in place on a scratch tensor). The compiled forms live beside their
kernels and are tested against this one: ``fused_kernel.c`` (``surrogate_block``, kind 1) and the
CUDA string of :class:`~spkrobust.nets.neurons.PiecewiseLinear` for SpikingJelly's CuPy neurons.
"""
from __future__ import annotations

import torch


def triangle(x: torch.Tensor, alpha: float, width: float, inplace: bool = False) -> torch.Tensor:
    """``alpha/width · max(0, 1 - |x|/width)``; ``inplace`` overwrites ``x`` (a scratch tensor)."""
    if inplace:
        return x.abs_().div_(width).neg_().add_(1.0).clamp_(min=0.0).mul_(alpha / width)
    return (alpha / width) * torch.clamp(1.0 - x.abs() / width, min=0.0)
