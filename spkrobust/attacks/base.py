"""What every attack shares: seeds, the source's kind, input gradients, projection onto the eps-ball
and the check every adversarial set passes before it is written.  The attacks
(:mod:`spkrobust.attacks.registry`) and their combinations (:mod:`spkrobust.attacks.ensemble`)
stand on this module; it imports neither."""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from spkrobust.config.vocab import GRAD_MODE_ESTIMATORS
from spkrobust.errors import UserError
from spkrobust.nets.estimators import layer_estimate, parse_grad

BALL_TOL = 1e-6


class AdversarialSetError(RuntimeError):
    """An adversarial set leaves the eps-ball or [0, 1]: a bug, never written to disk."""


class NoGradientError(UserError):
    """The source model gives no input gradient (its output is not differentiable w.r.t. the input)."""


# ---- small helpers ------------------------------------------------------------------------------

def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any printable parts (base seed, names, replica, ...)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def is_stochastic(model: nn.Module) -> bool:
    return bool(getattr(model, "stochastic", False))


def set_grad_mode(model: nn.Module, grad_mode: str | None) -> str | None:
    """Apply the config's ``eval.grad_mode`` on an SNN source: the estimator it stands for
    (:data:`~spkrobust.config.vocab.GRAD_MODE_ESTIMATORS`, ``rate`` = ``bptr``) becomes the
    backward pass of every spiking layer, for every attack without its own ``grad:`` (one with
    its own replaces it while it runs, :class:`spkrobust.nets.estimators.EstimatedModel`).
    Returns what was applied (None for ANNs)."""
    kind = (getattr(model, "meta", None) or {}).get("kind")
    if grad_mode is None or kind == "ann":
        return None if kind == "ann" else grad_mode
    if grad_mode not in GRAD_MODE_ESTIMATORS:
        raise UserError(f"grad_mode: {grad_mode!r} is not one of {', '.join(GRAD_MODE_ESTIMATORS)}")
    spec = GRAD_MODE_ESTIMATORS[grad_mode]
    est = None if spec is None else functools.partial(layer_estimate, parse_grad(spec))
    if hasattr(model, "spiking_layers"):
        for m in model.spiking_layers():
            m.estimator = est
    elif est is not None:
        raise UserError(f"grad_mode {grad_mode!r} requested but the source model has no spiking layers")
    return grad_mode


def begin_run(model: nn.Module, eot_samples: int = 1) -> None:
    """Tell a stateful gradient estimator (``grad: assg``, :meth:`spkrobust.nets.estimators.EstimatedModel.begin_run`)
    that an attack run or restart starts, each of whose steps takes ``eot_samples`` gradient passes
    (EOT draws; only the first updates the state).  Looks through wrappers (``.model``); a no-op for
    every other source."""
    m = model
    while m is not None:
        if hasattr(m, "begin_run"):
            m.begin_run(max(1, int(eot_samples)))
            return
        m = getattr(m, "model", None)


def zero_grad_mask(grad: torch.Tensor) -> torch.Tensor:
    """Per input: True where the gradient (or its sign) is exactly zero everywhere."""
    return grad.reshape(grad.shape[0], -1).ne(0).sum(1).eq(0)


# ---- gradients ----------------------------------------------------------------------------------

def _logits_with_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not out.requires_grad:
        raise NoGradientError(
            "the source model's output carries no gradient w.r.t. its input (e.g. SpikingJelly neurons "
            "in eval() mode or a non-differentiable encoder): gradient attacks would silently do nothing")
    return out


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1) -> torch.Tensor:
    """Input gradient of the summed cross-entropy, summed over ``eot_samples`` forward/backward
    passes (independent Poisson draws on a stochastic model). Float tensor shaped like ``x``."""
    grad = torch.zeros_like(x)
    for _ in range(max(1, int(eot_samples))):
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(_logits_with_grad(model, xg), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xg, allow_unused=True)
        if g is None:
            raise NoGradientError("the source model's loss does not depend on its input: no input gradient")
        grad += g
    return grad


def batched(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0).detach()


class GradProbe(nn.Module):
    """Wraps a model for torchattacks: checks that gradients flow and keeps the input gradients of
    the first ``capture`` gradient-carrying forward passes (the attack's first step)."""

    def __init__(self, model: nn.Module, capture: int):
        super().__init__()
        self.model = model
        self.train(model.training)  # torchattacks restores train() after the attack if the wrapper was training
        self.capture = int(capture)
        self.grad_calls = 0
        self.captured: dict[int, torch.Tensor] = {}

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_calls += 1
            idx = self.grad_calls
            if idx <= self.capture:
                x = x.view_as(x)  # a graph-local alias: the hook fires for this pass only
                x.register_hook(lambda g, i=idx: self.captured.__setitem__(i, g.detach().clone()))
            return _logits_with_grad(self.model, x)
        return self.model(x)

    def first_grad(self) -> torch.Tensor | None:
        if not self.captured:
            return None
        return sum(self.captured[i] for i in sorted(self.captured))


def verify_adv(x: torch.Tensor, x_adv: torch.Tensor, eps: float, tol: float = BALL_TOL) -> None:
    """Raise :class:`AdversarialSetError` unless ``x_adv`` is finite, in [0, 1] and within eps (L∞)."""
    if x_adv.shape != x.shape:
        raise AdversarialSetError(f"adversarial set shape {tuple(x_adv.shape)} != inputs {tuple(x.shape)}")
    xa = x_adv.detach().float().cpu()
    if not torch.isfinite(xa).all():
        raise AdversarialSetError("adversarial set contains NaN/inf values")
    lo, hi = float(xa.min()) if xa.numel() else 0.0, float(xa.max()) if xa.numel() else 0.0
    if lo < 0.0 or hi > 1.0:
        raise AdversarialSetError(f"adversarial set leaves [0, 1]: min {lo:.6g}, max {hi:.6g}")
    dist = float((xa - x.detach().float().cpu()).abs().max()) if xa.numel() else 0.0
    if dist > eps + tol:
        raise AdversarialSetError(f"adversarial set leaves the eps-ball: max |x_adv - x| = {dist:.8g} > "
                                  f"eps {eps:.8g} + {tol:g}")
