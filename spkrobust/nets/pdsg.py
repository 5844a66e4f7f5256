"""PDSG: the potential-dependent surrogate gradient of Lun et al.

Paper: Lun et al., "Towards Effective and Sparse Adversarial Attack on Spiking Neural Networks via
Breaking Invisible Surrogate Gradients", CVPR 2025.  Code: github.com/ryime/PDSG-SDA,
``utils/attack.py`` (``PDSG``, ``piecewise_quadratic_backward``, ``PDSG_LIFNode``); the ASSG code
(craree/…, ``my_node.py``, ``PDGrad``) has the same rule.  :mod:`spkrobust.nets.estimators` runs it
as backpropagation through time (``grad: pdsg``), following the layer's ``detach_reset``.

With ``x = v - θ`` the membrane before reset, ``d s / d x`` is a Gaussian density of standard
deviation σ centred at σ/2: ``exp(-(x - σ/2)²/(2σ²)) / (√(2π)·σ)``.  σ is the standard deviation
of the membrane (the same as of ``x``) per channel of a convolutional layer (per feature of a
linear one), taken over the batch, the spatial positions and the time steps ``1 … t`` so far — the
reference stacks the membranes of the steps up to ``t`` ("following Time-Accumulated Batch
Normalization") and reduces every dimension but the channel; Bessel-corrected, as ``torch.std``.
A σ of 0 is replaced by 1, as in the reference; so is an undefined one (a single element, where
the reference would give NaN).
"""
from __future__ import annotations

import math

import torch


def gaussian_half_sigma(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """PDSG's ``d s / d x``: the normal density N(σ/2, σ²) at ``x``."""
    return torch.exp(-((x - 0.5 * sigma) ** 2) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)


class PDSGSurrogate:
    """``d s / d x`` of one layer's pass, step by step: keeps the membranes so far in ``history``
    (the layer's, carried across time chunks; step ``t`` is its entry ``t``)."""

    def __init__(self, history: list | None = None):
        self.history: list[torch.Tensor] = [] if history is None else history

    def sigma(self, v: torch.Tensor, t: int | None = None) -> torch.Tensor:
        """σ per channel (dim 1 of ``v`` = ``[B, C, ...]``) of the membranes up to step ``t`` (None:
        the next step), shaped to broadcast on ``v``. A step already in the history (a checkpointed
        chunk recomputed for the backward pass) reads it instead of appending."""
        t = len(self.history) if t is None else int(t)
        if t == len(self.history):
            self.history.append(v.detach())
        elif t > len(self.history):
            raise RuntimeError(f"PDSG: membrane history has {len(self.history)} steps, step {t} asked")
        h = torch.stack(self.history[: t + 1])  # [t+1, B, C, ...]
        dims = tuple(i for i in range(h.dim()) if i != 2)
        sig = h.std(dim=dims, keepdim=True).squeeze(0) if h[:, :, :1].numel() > 1 else torch.ones_like(h[0, :1])
        return torch.where(torch.isfinite(sig) & (sig != 0), sig, torch.ones_like(sig))

    def dsdx(self, v: torch.Tensor, theta: float, t: int | None = None) -> torch.Tensor:
        return gaussian_half_sigma(v - theta, self.sigma(v, t))
