"""Gradient estimators for attacking SNNs: each one changes only the backward pass.

An attack on an SNN needs ``d loss / d input`` through spikes, which have no derivative. How that
derivative is replaced (the *gradient estimator*) decides white-box results on SNNs (DESIGN §8), so
every gradient attack may choose one (``grad: {mode, surrogate, width, gamma, ...}`` in its config;
the schema ``$defs.grad_spec`` holds the defaults; :mod:`spkrobust.nets.gradspec` parses it). In every mode the forward outputs are exactly the model's
(the spikes come from the model's own neurons; the estimator only adds a zero-valued term
``g - g.detach()`` whose gradient is the estimator's), so the attack's loss, its success test and
the crafted set are judged on the real SNN.

Notation: a spiking layer with threshold θ and leak λ (λ = 1: IF) gets inputs ``x[t]``, integrates
``v[t] = λ·v[t-1] + x[t]``, spikes ``s[t] = H(v[t] - θ)`` and resets softly (``v -= θ·s``);
``u = v/θ - 1`` is the membrane in threshold units and ``x̄ = mean_t x[t]``. Every estimator that
backpropagates through the membrane follows the layer's ``detach_reset`` (the model's
``model.detach_reset``, default true): with it the reset ``θ·s`` carries no gradient, as in training.

======  ==========================================================================================
mode    backward pass
======  ==========================================================================================
bptt    backpropagation through time; ``surrogate: null`` keeps the training surrogate, otherwise
        ``ds/dv = σ'(u; width)/θ`` with an attack-time surrogate, independent of training
        (Wu et al. 2018 STBP; Özdenizci & Legenstein, TMLR 2024, attack with several surrogates)
ste     backpropagation through time with the straight-through estimator ``ds/dv = 1/θ``
        (Bengio et al. 2013; one of Özdenizci & Legenstein's 19 ensemble modes)
bptr    backpropagation through rates as released with SNN-RAT (Ding et al., NeurIPS 2022;
        putshua/SNN-RAT ``models/layers.py``, ``RateBp``) and used by HART and the ASSG code:
        ``dL/dx[t] = dL/ds[t] · 1[mean_t s > 0] / θ`` — the gradient passes wherever the neuron
        fired at least once, with no upper limit (θ = 1 in the released code; ``1/θ`` is the slope
        of the rate ``x̄/θ``); the older ``eval.grad_mode: rate`` runs this same code
rga     rate gradient approximation: the gradient of RGA's piecewise-linear rate curve of a LIF
        neuron, slope ``γ_r`` on ``[0, 1-λ]`` and ``(1 - γ_r(1-λ))/(1+λ)`` on ``[1-λ, 2]`` (in x̄/θ;
        ``γ_r`` = 0.2 as in the paper's code) (Bu et al., CVPR 2023)
act     the ANN-equivalent activation of the same weights: the gradient of the network with every
        spiking layer replaced by ``clamp(·/θ, 0, 1)`` on the encoder's expected input (Bu et al.,
        CVPR 2023, "Act"; Özdenizci & Legenstein 2024)
hart    HART: per step a triangular surrogate of width ``gamma`` (threshold units), no gradient
        through the membrane across steps, the input gradient averaged over time — γ sets the mix
        of rate and temporal information and is tuned per model (Hao et al., ICLR 2024); a list
        ``gamma: [...]`` is tried member by member in an ensemble and searched per source in a
        single attack (:mod:`spkrobust.attacks.search`, ``info["grad_search"]``)
assg    backpropagation through time with the adaptive-sharpness surrogate ASSG: a shape (``atan``
        …) whose sharpness per layer, step, image and neuron follows moving averages of
        ``|v - θ|`` over the attack's iterations (Wang et al., arXiv 2512.22522; craree/Towards-
        Reliable-Evaluation-…, ``my_node.py``): :mod:`spkrobust.nets.assg`; a list ``a: [...]``
        as hart's γ list
pdsg    backpropagation through time with PDSG: a Gaussian surrogate centred at σ/2, σ the std of
        the membrane per channel (Lun et al., CVPR 2025; ryime/PDSG-SDA ``utils/attack.py``):
        :mod:`spkrobust.nets.pdsg`
mix     the input gradients of ``members`` (other estimators) combined at every attack step:
        their mean (HART's MIXPGD) or per image the one whose step raises the loss most (MDSE,
        Neurocomputing 2025): :mod:`spkrobust.nets.mix`
======  ==========================================================================================

Bounded gradients (:mod:`spkrobust.nets.bounded`): bptt, ste, assg and pdsg follow the membrane step
by step, carried by the layer across time chunks (``est_v``, ``est_t``); hart, bptr and rga average
over all T in their backward (:data:`TIME_GLOBAL`: run without time chunks); pdsg's σ is taken over
the batch (:data:`BATCH_GLOBAL`: run without image micro-batches); ASSG keeps one state per image
micro-batch (``layer.rows``) and leaves it alone while a checkpointed piece is recomputed.

Stateful estimators (assg) keep their state in the estimated model: :meth:`EstimatedModel.begin_run`
(called by :func:`spkrobust.attacks.base.begin_run` at every attack run and restart) resets it and
says how many EOT draws each attack step takes; only the first draw of a step updates the state.

Attack-time surrogates (all ``d s / d u`` with unit area, peak ``1/width`` except the sigmoid's):
``linear`` (triangle, ``max(0, 1 - |u|/w)/w``), ``rectangular`` (``1/w`` on ``|u| < w/2``),
``sigmoid`` (``k·σ(ku)(1 - σ(ku))``, ``k = 4/w``), ``atan`` (``(1/w)/(1 + (πu/w)²)``) and ``exp``
(``exp(-2|u|/w)/w``). ANN sources have one gradient; the estimator is ignored for them.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn as nn

from spkrobust.config.vocab import ATTACK_SURROGATES, BATCH_GLOBAL_ESTIMATORS, TIME_GLOBAL_ESTIMATORS
from spkrobust.errors import UserError
from spkrobust.nets.assg import ASSGState
from spkrobust.nets.gradspec import LEGACY_GRAD_MODES, MODES, GradSpec, grad_defaults, parse_grad
from spkrobust.nets.pdsg import PDSGSurrogate
from spkrobust.nets.surrogates import triangle

__all__ = ["ATTACK_SURROGATES", "BATCH_GLOBAL", "LEGACY_GRAD_MODES", "MODES", "RGA_GAMMA", "TIME_GLOBAL", "EstimatedModel",
           "estimator_spec", "GradSpec", "ann_equivalent",
           "grad_defaults", "layer_estimate", "parse_grad", "rga_rate", "surrogate_grad", "with_estimator"]
RGA_GAMMA = 0.2  # RGA's slope below the LIF firing onset (Bu et al. 2023, their code's constant)

# ---- surrogate derivatives ----------------------------------------------------------------------

def surrogate_grad(name: str, u: torch.Tensor, width: float) -> torch.Tensor:
    """``d spike / d u`` of an attack-time surrogate at ``u = v/θ - 1``."""
    w = float(width)
    if name == "linear":
        return triangle(u, 1.0, w)
    if name == "rectangular":
        return (u.abs() < w / 2).to(u.dtype) / w
    if name == "sigmoid":
        k = 4.0 / w
        s = torch.sigmoid(k * u)
        return k * s * (1 - s)
    if name == "atan":
        return (1.0 / w) / (1.0 + (math.pi * u / w) ** 2)
    if name == "exp":
        return torch.exp(-2.0 * u.abs() / w) / w
    raise UserError(f"unknown attack surrogate {name!r}; allowed: {', '.join(ATTACK_SURROGATES)}")


class _Spike(torch.autograd.Function):
    """Forward: the given (true) spikes. Backward: ``grad · dsdv`` w.r.t. the membrane."""

    @staticmethod
    def forward(ctx, v, spikes, dsdv):
        ctx.save_for_backward(dsdv)
        return spikes.clone()

    @staticmethod
    def backward(ctx, grad):
        (dsdv,) = ctx.saved_tensors
        return grad * dsdv, None, None


class _TimeMean(torch.autograd.Function):
    """Identity forward; backward replaces each step's gradient by its mean over time (HART)."""

    @staticmethod
    def forward(ctx, x_seq):
        return x_seq.view_as(x_seq)

    @staticmethod
    def backward(ctx, grad):
        return grad.mean(0, keepdim=True).expand_as(grad)


class _RateBp(torch.autograd.Function):
    """Forward: the model's spikes. Backward: ``grad · 1[mean_t s > 0] / θ`` per step (BPTR)."""

    @staticmethod
    def forward(ctx, x_seq, spikes, theta):
        ctx.save_for_backward((spikes.detach().mean(0, keepdim=True) > 0).to(x_seq.dtype))
        ctx.theta = float(theta)
        return spikes.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        (fired,) = ctx.saved_tensors
        return grad * fired / ctx.theta, None, None


def _resimulate(layer, x_seq: torch.Tensor, spikes: torch.Tensor, dsdv_of, detach_time: bool) -> torch.Tensor:
    """Re-run the soft-reset membrane on ``x_seq`` with the model's spikes as values and
    ``dsdv_of(v, t)`` (no graph; ``t`` the step since step 0) as their derivative, from the membrane
    the layer carries from the time chunk before (``layer.est_v``, ``layer.est_t``; rest at step 0); ``detach_time`` cuts the gradient between steps and the
    layer's ``detach_reset`` the gradient through the reset ``θ·s``."""
    theta, leak = layer.threshold, (1.0 if layer.neuron_type == "if" else layer.leak)
    detach_reset = bool(getattr(layer, "detach_reset", False))
    v, t0 = getattr(layer, "est_v", None), int(getattr(layer, "est_t", 0))  # carried from the chunk before
    v = torch.zeros_like(x_seq[0]) if v is None else v
    out = []
    for t in range(x_seq.shape[0]):
        v = (v.detach() if detach_time else v) * leak + x_seq[t]
        with torch.no_grad():
            dsdv = dsdv_of(v.detach(), t0 + t)
        s = _Spike.apply(v, spikes[t], dsdv)
        v = v - theta * (s.detach() if detach_reset else s)
        out.append(s)
    layer.est_v, layer.est_t = v, t0 + x_seq.shape[0]  # the next time chunk continues from here
    return torch.stack(out)


def _exact(spikes: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The model's spikes as value, ``g``'s gradient."""
    return spikes.detach() + (g - g.detach())


def layer_estimate(spec: GradSpec, layer, x_seq: torch.Tensor, spikes: torch.Tensor, state: ASSGState | None = None,
                   key: Any = None) -> torch.Tensor:
    """The output of one spiking layer (value: ``spikes``, the model's) with ``spec``'s backward
    (assg: with the run's ``state``, this layer's entries under ``key``)."""
    theta = layer.threshold
    if spec.mode in TIME_GLOBAL and int(getattr(layer, "est_t", 0)) > 0:
        raise RuntimeError(f"grad mode {spec.mode} needs all T steps in one call (its backward averages over "
                           "time); spkrobust.nets.bounded runs it without time chunks")
    if spec.mode == "bptt":
        return _exact(spikes, _resimulate(
            layer, x_seq, spikes, lambda v, t: surrogate_grad(spec.surrogate, v / theta - 1.0, spec.width) / theta,
            False))
    if spec.mode == "ste":
        return _exact(spikes, _resimulate(layer, x_seq, spikes, lambda v, t: torch.full_like(v, 1.0 / theta), False))
    if spec.mode == "hart":
        if isinstance(spec.gamma, tuple):
            raise UserError("grad.gamma: a list of γ is expanded by an ensemble or searched by an attack, "
                            "not used as one estimator")
        return _exact(spikes, _resimulate(
            layer, _TimeMean.apply(x_seq), spikes,
            lambda v, t: surrogate_grad("linear", v / theta - 1.0, spec.gamma) / theta, True))
    if spec.mode == "assg":
        if isinstance(spec.a, tuple):
            raise UserError("grad.a: a list of a is expanded by an ensemble or searched by an attack, "
                            "not used as one estimator")
        if state is None:
            raise UserError("grad mode assg needs its state (use EstimatedModel)")
        rows = int(getattr(layer, "rows", 0))  # one state per image micro-batch (spkrobust.nets.bounded)
        return _exact(spikes, _resimulate(layer, x_seq, spikes, lambda v, t: state.dsdx((key, rows), t, v - theta),
                                          False))
    if spec.mode == "pdsg":
        pd = PDSGSurrogate(getattr(layer, "est_hist", None))
        return _exact(spikes, _resimulate(layer, x_seq, spikes, lambda v, t: pd.dsdx(v, theta, t), False))
    if spec.mode == "bptr":
        return _RateBp.apply(x_seq, spikes, theta)
    if spec.mode == "rga":
        r = rga_rate(x_seq.mean(0) / theta, 1.0 if layer.neuron_type == "if" else layer.leak)
        return spikes.detach() + (r - r.detach()).unsqueeze(0)
    raise UserError(f"grad mode {spec.mode!r} is not a per-layer estimator")  # act is model-level


TIME_GLOBAL = TIME_GLOBAL_ESTIMATORS  # modes whose backward at a step needs every step of T (no time chunks)
BATCH_GLOBAL = BATCH_GLOBAL_ESTIMATORS  # modes whose backward needs the whole batch (σ over the images)


def estimator_spec(estimator) -> GradSpec | None:
    """The :class:`GradSpec` of a spiking layer's ``estimator`` (None: the model's own BPTT)."""
    if estimator is None:
        return None
    spec = estimator.args[0] if isinstance(estimator, functools.partial) and estimator.args else None
    return spec if isinstance(spec, GradSpec) else None


def rga_rate(ubar: torch.Tensor, leak: float) -> torch.Tensor:
    """RGA's piecewise-linear rate curve of a LIF neuron (leak λ) against ``x̄/θ``: ``γ_r·u`` up
    to ``1-λ``, then linear up to rate 1 at ``u = 2``, 0 below 0, 1 above 2 (Bu et al. 2023)."""
    knee = 1.0 - leak
    slope = (1.0 - RGA_GAMMA * knee) / (2.0 - knee)
    low = RGA_GAMMA * torch.clamp(ubar, 0.0, knee)
    return low + slope * (torch.clamp(ubar, knee, 2.0) - knee)


# ---- model level ---------------------------------------------------------------------------------

def ann_equivalent(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the rate (ANN-equivalent) network of an SNN: the encoder's expected input, every
    spiking layer replaced by ``clamp(·/θ, 0, 1)``, dropout off. Straight-through at the encoder
    (expected value forward, identity backward), as the SNN's own Poisson encoder."""
    from spkrobust.nets.neurons import SpikingLayer

    enc = model.encoder
    if enc.kind == "poisson_unsigned":
        h = x
    else:
        xn = (x - enc.mean) / enc.std
        h = xn if enc.kind == "direct" else xn + (torch.clamp(xn, -1.0, 1.0) - xn).detach()
    for m in model.layers:
        if isinstance(m, SpikingLayer):
            h = torch.clamp(h / m.threshold, 0.0, 1.0)
        elif m.__class__.__name__ == "Dropout":
            continue
        else:
            h = m(h)
    return h


class EstimatedModel(nn.Module):
    """A source model whose input gradient comes from ``spec``; forward outputs are the model's.

    The estimator is installed on the spiking layers only while a gradient-carrying forward pass
    runs; passes without gradient are the plain model. ``meta``/``stochastic`` are the model's.
    ``state`` holds a stateful estimator's run (assg); ``draw`` is the EOT draw of the current
    gradient pass within its attack step (counted since :meth:`begin_run`)."""

    def __init__(self, model: nn.Module, spec: GradSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.meta = getattr(model, "meta", None)
        self.state = (ASSGState(spec.shape, spec.a, spec.relax, spec.beta1, spec.beta2)
                      if spec.mode == "assg" and not isinstance(spec.a, tuple) else None)
        self.eot, self.grad_passes, self.draw = 1, 0, 0
        self.train(model.training)

    def begin_run(self, eot: int = 1) -> None:
        """A new attack run or restart: reset the state; each of its steps takes ``eot`` gradient
        passes (EOT draws), of which only the first updates the state."""
        self.eot, self.grad_passes = max(1, int(eot)), 0
        if self.state is not None:
            self.state.reset()

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.model, "stochastic", False))

    def forward(self, x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(x)
        self.draw = self.grad_passes % self.eot
        self.grad_passes += 1
        if self.state is not None:
            self.state.update = self.draw == 0
        if self.spec.mode == "act":
            a = ann_equivalent(self.model, x)
            with torch.no_grad():
                out = self.model(x)
            return out + (a - a.detach())
        layers = self.model.spiking_layers()
        saved = [m.estimator for m in layers]
        try:
            for i, m in enumerate(layers):  # this spec decides, not the config's grad_mode
                m.estimator = None if self.spec.is_default else functools.partial(
                    _layer_call, self.spec, self.state, i)
            return self.model(x)
        finally:
            for m, e in zip(layers, saved):
                m.estimator = e


def _layer_call(spec, state, key, layer, x_seq, spikes):
    return layer_estimate(spec, layer, x_seq, spikes, state, key)


def with_estimator(model: nn.Module, grad: Any) -> tuple[nn.Module, GradSpec | None]:
    """``(model to attack, applied spec)``; an ANN source is returned as is with spec None."""
    spec = parse_grad(grad)
    if (getattr(model, "meta", None) or {}).get("kind") != "snn" or not hasattr(model, "spiking_layers"):
        return model, None
    if spec.mode == "mix":
        from spkrobust.nets.mix import MixedModel  # mix stands on this module

        return MixedModel(model, spec, [EstimatedModel(model, m) for m in spec.members]), spec
    return EstimatedModel(model, spec), spec
