"""Input encoders for SNNs: ``[B, C, H, W]`` pixels in [0, 1] → ``[T, B, C, H, W]``.

* ``poisson`` — the studies' signed Poisson code on the normalised input: at each step a spike of
  sign(x̂) with probability min(|x̂|, 1), where x̂ = (x - mean) / std. With the default
  ``input_norm: half`` (mean = std = 0.5, as all the studies' code) x̂ = 2x - 1 lies in [-1, 1]: no
  probability is clipped and E[spike] = x̂ exactly; dataset statistics run to about ±2 and saturate;
* ``poisson_unsigned`` — spikes with probability x on the raw [0, 1] pixels (SpikingJelly's
  ``PoissonEncoder``, which has no gradient of its own);
* ``direct`` — the normalised analog image at every step.

Both Poisson codes are straight-through: spikes forward, identity backward (the studies' method for
crafting attacks through the encoder).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import encoding

from spkrobust.config.vocab import ENCODERS


class _StraightThrough(torch.autograd.Function):
    """Forward: the given spikes. Backward: identity w.r.t. the analog value they encode."""

    @staticmethod
    def forward(ctx, analog, spikes):
        return spikes

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Encoder(nn.Module):
    def __init__(self, kind: str, T: int, mean: list[float], std: list[float]):
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"unknown encoder {kind!r}; allowed: {', '.join(ENCODERS)}")
        self.kind, self.T = kind, int(T)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self._sj_poisson = encoding.PoissonEncoder(step_mode="s")

    @property
    def stochastic(self) -> bool:
        return self.kind != "direct"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.T
        if self.kind == "poisson_unsigned":
            xe = x.unsqueeze(0).expand(T, *x.shape)
            with torch.no_grad():
                spikes = self._sj_poisson(xe)
            return _StraightThrough.apply(xe, spikes)
        xn = (x - self.mean) / self.std
        xe = xn.unsqueeze(0).expand(T, *xn.shape)
        if self.kind == "direct":
            return xe
        with torch.no_grad():
            spikes = torch.sign(xe) * (torch.rand_like(xe) < xe.abs()).to(xe.dtype)
        return _StraightThrough.apply(xe, spikes)

    def extra_repr(self):
        return f"kind={self.kind}, T={self.T}"
