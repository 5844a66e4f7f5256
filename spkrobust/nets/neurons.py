"""Spiking neurons on SpikingJelly: the studies' surrogate, IF/LIF with leak, backend selection.

The studies' neuron: ``v[t] = leak * v[t-1] + x[t]``, spike when ``v >= threshold``, soft reset
(subtract the threshold). On SpikingJelly this is ``LIFNode(tau=1/(1-leak), decay_input=False,
v_reset=None)`` and ``IFNode(v_reset=None)`` for leak = 1. ``detach_reset=True`` (the config
default, as Rathi et al.'s constant ``rst``) gives the reset no gradient, in training and attacks.

Two SpikingJelly behaviours are handled here:

* in ``eval()`` mode SpikingJelly's neurons take a hard step with no surrogate (no input gradient);
  :class:`SpikingLayer` therefore keeps its neuron in training mode at all times (the forward pass
  is identical; only the backward differs) so attacks get gradients while dropout stays in
  inference behaviour;
* ``estimator`` (``eval.grad_mode: rate`` sets the ``bptr`` estimator here through
  :func:`spkrobust.attacks.base.set_grad_mode`; an attack's ``grad:`` is set by :class:`spkrobust.nets.estimators.EstimatedModel` during an attack) is called as
  ``estimator(layer, x_seq, spikes)`` on gradient-carrying passes: the neuron computes the spikes
  without a graph and the estimator gives them its backward pass. An estimator that follows the
  membrane carries its own (``est_v``, with its graph) and the global step (``est_t``) across time
  chunks; :meth:`reset` clears them.

State: a :class:`SpikingLayer` on its own starts every call from rest (``carry = False``). Inside an
:class:`spkrobust.nets.models.SNN` it carries the membrane from call to call (``carry = True``) and
the network resets it once per forward pass, so the network can run T in chunks (SpikingJelly's
multistep nodes and the fused node both keep ``v`` between calls; the CuPy node starts from it).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron, surrogate

from spkrobust.errors import UserError
from spkrobust.config.vocab import BACKENDS, SURROGATES
from spkrobust.nets.replay import replaying
from spkrobust.nets.surrogates import triangle


class _PiecewiseLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, width):
        if x.requires_grad:
            ctx.save_for_backward(x)
            ctx.alpha, ctx.width = alpha, width
        return surrogate.heaviside(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * piecewise_linear_grad(x, ctx.alpha, ctx.width), None, None


def piecewise_linear_grad(x: torch.Tensor, alpha: float, width: float) -> torch.Tensor:
    """d spike / d x for ``x = v - threshold``: ``alpha/width * max(0, 1 - |x|/width)``
    (:func:`spkrobust.nets.surrogates.triangle`)."""
    return triangle(x, alpha, width)


class PiecewiseLinear(surrogate.SurrogateFunctionBase):
    """The studies' surrogate: with ``u = v/θ - 1``, ``d spike / d u = alpha * max(0, 1 - |u|)``.

    SpikingJelly feeds ``x = v - θ``; with ``width = θ`` this is ``alpha/θ * max(0, 1 - |x|/θ)``,
    i.e. exactly the gradient of the studies' ``LinearSpike`` applied to ``v/θ - 1``.
    """

    def __init__(self, alpha: float = 0.3, width: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)
        self.width = float(width)

    def forward(self, x):
        if self.spiking:
            return _PiecewiseLinearFn.apply(x, self.alpha, self.width)
        return self.primitive_function(x, self.alpha, self.width)

    @staticmethod
    def primitive_function(x, alpha, width=1.0):  # the integral of the surrogate, for completeness
        w = width
        y = torch.clamp(x / w, -1.0, 1.0)
        return alpha * (y - 0.5 * y * y.abs()) + 0.5 + 0 * x

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return piecewise_linear_grad(x, self.alpha, self.width)

    @property
    def native_kind(self):
        return 1, float(self.alpha), float(self.width)

    def cuda_codes(self, y: str, x: str, dtype: str) -> str:
        """:meth:`derivative` as CUDA statements for SpikingJelly's CuPy neuron kernels (backend
        ``cupy``), which compile ``surrogate_function.cuda_codes``; ``dtype`` is ``float`` or
        ``half2``. Without it the CuPy backend cannot run this surrogate."""
        from spikingjelly.activation_based.auto_cuda import cfunction as cf

        p = "piecewise_linear_backward__"
        codes = cf.div(z=f"const {dtype} {p}u", x=cf.abs(None, x, dtype), y=cf.constant(None, self.width, dtype),
                       dtype=dtype)
        codes += cf.sub(z=f"const {dtype} {p}r", x=cf.constant(None, 1.0, dtype), y=f"{p}u", dtype=dtype)
        codes += cf.maximum(z=f"const {dtype} {p}m", x=cf.constant(None, 0.0, dtype), y=f"{p}r", dtype=dtype)
        codes += cf.mul(z=y, x=cf.constant(None, self.alpha / self.width, dtype), y=f"{p}m", dtype=dtype)
        return codes

    def extra_repr(self):
        return f"alpha={self.alpha}, width={self.width}, spiking={self.spiking}"


class Sigmoid(surrogate.Sigmoid):
    """SpikingJelly's sigmoid surrogate with its derivative and kernel formula declared."""

    @property
    def native_kind(self):
        return 2, float(self.alpha), 1.0

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1 - s)


class ATan(surrogate.ATan):
    """SpikingJelly's arctan surrogate with its derivative and kernel formula declared."""

    @property
    def native_kind(self):
        return 3, float(self.alpha), 1.0

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x) ** 2)


def make_surrogate(name: str, threshold: float) -> nn.Module:
    """Surrogate by name, scaled to the threshold; each declares ``derivative(x)`` and the fused
    kernel's formula for it (``native_kind``)."""
    if name == "linear":
        return PiecewiseLinear(alpha=0.3, width=threshold)
    if name == "sigmoid":
        return Sigmoid(alpha=4.0 / threshold)
    if name == "atan":
        return ATan(alpha=2.0 / threshold)
    raise UserError(f"unknown surrogate {name!r}; allowed: {', '.join(SURROGATES)}")


def cupy_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str, device: torch.device | str | None = None) -> str:
    """``auto`` → ``cupy`` on CUDA with CuPy, else ``fused`` when available, else ``torch``."""
    if backend not in BACKENDS:
        raise UserError(f"unknown neuron backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    dev = torch.device(device) if device is not None else None
    if backend == "cupy":
        if not cupy_available():
            raise UserError("neuron backend 'cupy' needs a CUDA GPU and the cupy package; "
                            "none is available here: use backend 'auto' or 'torch'")
        return "cupy"
    if backend == "auto":
        if (dev is None or dev.type == "cuda") and cupy_available():
            return "cupy"
        return "fused" if _fused_available() else "torch"
    return backend


def _fused_available() -> bool:
    try:
        from spkrobust.nets import fused  # noqa: F401
    except ImportError:
        return False
    return True


def make_node(neuron_type: str, leak: float, threshold: float, surrogate_name: str, backend: str,
              detach_reset: bool = False) -> nn.Module:
    """A multistep SpikingJelly IF/LIF node with the studies' soft reset (or the fused equivalent)."""
    sg = make_surrogate(surrogate_name, threshold)
    if backend == "fused":
        from spkrobust.nets.fused import FusedNode

        return FusedNode(v_threshold=threshold, leak=1.0 if neuron_type == "if" else leak, surrogate_function=sg,
                         detach_reset=detach_reset)
    sj_backend = "cupy" if backend == "cupy" else "torch"
    if neuron_type == "if" or leak == 1.0:
        return neuron.IFNode(v_threshold=float(threshold), v_reset=None, surrogate_function=sg,
                             detach_reset=bool(detach_reset), step_mode="m", backend=sj_backend)
    return neuron.LIFNode(tau=1.0 / (1.0 - leak), decay_input=False, v_threshold=float(threshold), v_reset=None,
                          surrogate_function=sg, detach_reset=bool(detach_reset), step_mode="m", backend=sj_backend)


class SpikingLayer(nn.Module):
    """A multistep neuron layer ``[T, B, ...] -> [T, B, ...]`` that always gives input gradients."""

    def __init__(self, neuron_type: str, leak: float, threshold: float, surrogate_name: str, backend: str,
                 detach_reset: bool = False):  # False: SpikingJelly's own default; models pass the config's
        super().__init__()
        self.neuron_type, self.leak, self.surrogate_name, self.backend = neuron_type, float(leak), surrogate_name, backend
        self.threshold = float(threshold)
        self.detach_reset = bool(detach_reset)
        self.estimator = None
        self.carry = False  # True: keep the membrane between calls until reset() (an SNN's layers)
        self.rows = 0  # first image of the current micro-batch in the attack batch (keys ASSG's state)
        self.est_v, self.est_t, self.est_hist = None, 0, []  # an estimator's carried membrane, step, history
        self.node = make_node(neuron_type, leak, threshold, surrogate_name, backend, self.detach_reset)
        self.node.train(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.node.train(True)  # SpikingJelly's eval path has no surrogate gradient
        return self

    def reset(self) -> None:
        if hasattr(self.node, "reset"):
            self.node.reset()
        self.est_v, self.est_t = None, 0
        if not replaying():  # a recomputed chunk reads the history of its forward pass (PDSG)
            self.est_hist = []

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.carry:
            self.reset()
        estimator = self.estimator
        if estimator is not None and torch.is_grad_enabled() and x_seq.requires_grad:
            with torch.no_grad():  # the estimator carries its own membrane across time chunks (est_v)
                s = self.node(x_seq)
            return estimator(self, x_seq, s)
        return self.node(x_seq)

    def extra_repr(self):
        return (f"neuron={self.neuron_type}, leak={self.leak}, threshold={self.threshold:.4g}, "
                f"surrogate={self.surrogate_name}, backend={self.backend}, detach_reset={self.detach_reset}")
