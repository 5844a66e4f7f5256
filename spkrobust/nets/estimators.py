"""Gradient estimators for attacking SNNs: each one changes only the backward pass.

An attack on an SNN needs ``d loss / d input`` through spikes, which have no derivative. How that
derivative is replaced (the *gradient estimator*) decides white-box results on SNNs (DESIGN §8), so
every gradient attack may choose one (``grad: {mode, surrogate, width, gamma}`` in its config; the
schema ``$defs.grad`` holds the defaults). In every mode the forward outputs are exactly the model's
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
        of rate and temporal information and is tuned per model (Hao et al., ICLR 2024)
======  ==========================================================================================

Attack-time surrogates (all ``d s / d u`` with unit area, peak ``1/width`` except the sigmoid's):
``linear`` (triangle, ``max(0, 1 - |u|/w)/w``), ``rectangular`` (``1/w`` on ``|u| < w/2``),
``sigmoid`` (``k·σ(ku)(1 - σ(ku))``, ``k = 4/w``), ``atan`` (``(1/w)/(1 + (πu/w)²)``) and ``exp``
(``exp(-2|u|/w)/w``). ANN sources have one gradient; the estimator is ignored for them.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from spkrobust.errors import UserError
from spkrobust.config.vocab import ATTACK_SURROGATES, GRAD_ESTIMATORS

MODES = GRAD_ESTIMATORS
LEGACY_GRAD_MODES = {"rate": "bptr"}  # the older eval.grad_mode values
RGA_GAMMA = 0.2  # RGA's slope below the LIF firing onset (Bu et al. 2023, their code's constant)


@functools.lru_cache(maxsize=1)
def grad_defaults() -> dict:
    """The defaults of ``grad`` from the config schema (``$defs.grad_spec``), their single home."""
    from spkrobust.config.schema import defaults

    return defaults("grad_spec")


@dataclass(frozen=True)
class GradSpec:
    mode: str = "bptt"
    surrogate: str | None = None
    width: float = 1.0
    gamma: float = 1.0

    @property
    def is_default(self) -> bool:
        """True when the model's own backward pass (training surrogate, BPTT) is meant."""
        return self.mode == "bptt" and self.surrogate is None

    def label(self) -> str:
        if self.mode == "bptt":
            return "bptt" if self.surrogate is None else f"bptt-{self.surrogate}-w{self.width:g}"
        if self.mode == "hart":
            return f"hart-g{self.gamma:g}"
        return self.mode

    def as_dict(self) -> dict:
        return asdict(self)


def parse_grad(value: Any, key: str = "grad") -> GradSpec:
    """``None`` / a mode name / ``{mode, surrogate, width, gamma}`` → :class:`GradSpec` (defaults
    from the schema); bad values raise a one-line :class:`UserError` naming ``key``."""
    if isinstance(value, GradSpec):
        return value
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise UserError(f"{key}: must be a mode name or a mapping {{mode, surrogate, width, gamma}}, got {value!r}")
    defaults = grad_defaults()
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise UserError(f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(defaults)}")
    p = {**defaults, **{k: v for k, v in value.items() if v is not None or k == "surrogate"}}
    mode = LEGACY_GRAD_MODES.get(p["mode"], p["mode"])
    if mode not in MODES:
        raise UserError(f"{key}.mode: {p['mode']!r} is not one of {', '.join(MODES)}")
    if p["surrogate"] is not None and p["surrogate"] not in ATTACK_SURROGATES:
        raise UserError(f"{key}.surrogate: {p['surrogate']!r} is not one of {', '.join(ATTACK_SURROGATES)} (or null)")
    if p["surrogate"] is not None and mode != "bptt":
        raise UserError(f"{key}.surrogate: only mode bptt takes an attack-time surrogate, not {mode}")
    for k in ("width", "gamma"):
        v = p[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{key}.{k}: must be a number > 0, got {v!r}")
    return GradSpec(mode, p["surrogate"], float(p["width"]), float(p["gamma"]))


# ---- surrogate derivatives ----------------------------------------------------------------------

def surrogate_grad(name: str, u: torch.Tensor, width: float) -> torch.Tensor:
    """``d spike / d u`` of an attack-time surrogate at ``u = v/θ - 1``."""
    w = float(width)
    if name == "linear":
        return torch.clamp(1.0 - u.abs() / w, min=0.0) / w
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
    ``dsdv_of(v)`` as their derivative; ``detach_time`` cuts the gradient between steps and the
    layer's ``detach_reset`` the gradient through the reset ``θ·s``."""
    theta, leak = layer.threshold, (1.0 if layer.neuron_type == "if" else layer.leak)
    detach_reset = bool(getattr(layer, "detach_reset", False))
    v = torch.zeros_like(x_seq[0])
    out = []
    for t in range(x_seq.shape[0]):
        v = (v.detach() if detach_time else v) * leak + x_seq[t]
        with torch.no_grad():
            dsdv = dsdv_of(v.detach())
        s = _Spike.apply(v, spikes[t], dsdv)
        v = v - theta * (s.detach() if detach_reset else s)
        out.append(s)
    return torch.stack(out)


def _exact(spikes: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The model's spikes as value, ``g``'s gradient."""
    return spikes.detach() + (g - g.detach())


def layer_estimate(spec: GradSpec, layer, x_seq: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
    """The output of one spiking layer (value: ``spikes``, the model's) with ``spec``'s backward."""
    theta = layer.threshold
    if spec.mode == "bptt":
        return _exact(spikes, _resimulate(
            layer, x_seq, spikes, lambda v: surrogate_grad(spec.surrogate, v / theta - 1.0, spec.width) / theta, False))
    if spec.mode == "ste":
        return _exact(spikes, _resimulate(layer, x_seq, spikes, lambda v: torch.full_like(v, 1.0 / theta), False))
    if spec.mode == "hart":
        return _exact(spikes, _resimulate(
            layer, _TimeMean.apply(x_seq), spikes,
            lambda v: surrogate_grad("linear", v / theta - 1.0, spec.gamma) / theta, True))
    if spec.mode == "bptr":
        return _RateBp.apply(x_seq, spikes, theta)
    if spec.mode == "rga":
        r = rga_rate(x_seq.mean(0) / theta, 1.0 if layer.neuron_type == "if" else layer.leak)
        return spikes.detach() + (r - r.detach()).unsqueeze(0)
    raise UserError(f"grad mode {spec.mode!r} is not a per-layer estimator")  # act is model-level


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
    runs; passes without gradient are the plain model. ``meta``/``stochastic`` are the model's."""

    def __init__(self, model: nn.Module, spec: GradSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.meta = getattr(model, "meta", None)
        self.train(model.training)

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.model, "stochastic", False))

    def forward(self, x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(x)
        if self.spec.mode == "act":
            a = ann_equivalent(self.model, x)
            with torch.no_grad():
                out = self.model(x)
            return out + (a - a.detach())
        layers = self.model.spiking_layers()
        saved = [(m.estimator, m.grad_mode) for m in layers]
        est = None if self.spec.is_default else functools.partial(layer_estimate, self.spec)
        try:
            for m in layers:  # this spec decides, not the config's grad_mode
                m.estimator, m.grad_mode = est, "bptt"
            return self.model(x)
        finally:
            for m, (e, g) in zip(layers, saved):
                m.estimator, m.grad_mode = e, g


def with_estimator(model: nn.Module, grad: Any) -> tuple[nn.Module, GradSpec | None]:
    """``(model to attack, applied spec)``; an ANN source is returned as is with spec None."""
    spec = parse_grad(grad)
    if (getattr(model, "meta", None) or {}).get("kind") != "snn" or not hasattr(model, "spiking_layers"):
        return model, None
    return EstimatedModel(model, spec), spec
