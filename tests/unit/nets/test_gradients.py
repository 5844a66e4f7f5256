"""Gradient estimators (spkrobust.nets.estimators): forward outputs are the model's, every estimator gives
an input gradient through a loaded SNN in eval(), and on one spiking layer each equals a hand
computation of its backward rule."""
from __future__ import annotations

import math

import pytest
import helpers.robust as H
import torch
import torch.nn as nn
import torch.nn.functional as F

from spkrobust.config.vocab import GRAD_MODE_ESTIMATORS
from spkrobust.nets.encoding import Encoder
from spkrobust.errors import UserError
from spkrobust.nets.estimators import (
    ATTACK_SURROGATES,
    RGA_GAMMA,
    EstimatedModel,
    parse_grad,
    surrogate_grad,
    with_estimator,
)
from spkrobust.nets.models import load_model, save_model
from spkrobust.nets.neurons import SpikingLayer

SPECS = [None, "ste", "bptr", "rga", "act", {"mode": "hart", "gamma": 0.5}, "assg", {"mode": "assg", "shape": "linear"},
         "pdsg", {"mode": "mix", "members": ["ste", "pdsg"]}, {"mode": "mix", "members": ["assg", "act"], "combine": "maxloss"}] + \
        [{"mode": "bptt", "surrogate": s, "width": 0.5} for s in ATTACK_SURROGATES]


@pytest.fixture(scope="module")
def loaded_snns(tmp_path_factory):
    d = tmp_path_factory.mktemp("gradsnn")
    out = {}
    for enc in ("direct", "poisson"):
        # T = 6: at T = 2 a Poisson draw leaves a layer silent for some image in ~1 of 4 seeds (zero gradient)
        save_model(H.snn(seed=3, T=6, encoder=enc), d / f"{enc}.pt", name=enc, replica=1)
        out[enc] = load_model(d / f"{enc}.pt")
        assert not out[enc].training
    return out


def _grad(model, x, y):
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (g,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), xg)
    return out.detach(), g


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: parse_grad(s).label())
@pytest.mark.parametrize("enc", ["direct", "poisson"])
def test_estimator_gives_input_gradient_and_keeps_forward(loaded_snns, spec, enc):
    model = loaded_snns[enc]
    torch.manual_seed(0)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 4, 7])
    src, applied = with_estimator(model, spec)
    assert applied == parse_grad(spec)
    torch.manual_seed(5)
    with torch.no_grad():
        ref = model(x)
    torch.manual_seed(5)  # same Poisson draws
    out, g = _grad(src, x, y)
    assert torch.equal(out, ref), "the estimator changed the forward outputs"
    assert float(g.abs().sum()) > 0 and bool(torch.isfinite(g).all())
    assert (g.reshape(3, -1) != 0).any(1).all(), "an input got an all-zero gradient"
    assert not model.training and all(m.estimator is None for m in model.spiking_layers())


def test_default_spec_is_the_models_own_backward(loaded_snns):
    model = loaded_snns["direct"]
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    _, g_model = _grad(model, x, y)
    _, g_est = _grad(EstimatedModel(model, parse_grad(None)), x, y)
    assert torch.equal(g_model, g_est)


def test_estimators_differ_from_each_other(loaded_snns):
    model = loaded_snns["direct"]
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    grads = {parse_grad(s).label(): _grad(with_estimator(model, s)[0], x, y)[1] for s in SPECS}
    labels = list(grads)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            assert not torch.allclose(grads[a], grads[b]), f"{a} and {b} give the same gradient"


# ---- one spiking layer, by hand --------------------------------------------------------------------

THETA, T = 0.8, 3
X = torch.tensor([[0.3, 0.9, 1.5, -0.2, 0.7], [0.6, 0.1, 1.2, 0.4, 0.75], [0.2, 0.5, 1.9, 0.3, 0.9]]).unsqueeze(1)
C = torch.tensor([[1.0, -2.0, 0.5, 1.5, -1.0], [0.3, 1.0, -0.7, 2.0, 0.4], [-1.2, 0.6, 1.1, -0.5, 0.8]]).unsqueeze(1)


def _layer(neuron, leak, detach_reset=False):
    return SpikingLayer(neuron, leak, THETA, "linear", "torch", detach_reset=detach_reset).eval()


def _layer_grad(layer, spec):
    from spkrobust.nets.estimators import layer_estimate

    x = X.clone().requires_grad_(True)
    layer.estimator = None if spec is None else (lambda lay, xs, s: layer_estimate(parse_grad(spec), lay, xs, s))
    s = layer(x)
    (g,) = torch.autograd.grad((C * s).sum(), x)
    layer.estimator = None
    with torch.no_grad():
        assert torch.equal(s, layer(X)), "forward spikes changed"
    return s.detach(), g


def _membranes(leak, spikes):
    v, out = torch.zeros_like(X[0]), []
    for t in range(T):
        v = leak * v + X[t]
        out.append(v.clone())
        v = v - THETA * spikes[t]
    return torch.stack(out)


class _HandSpike(torch.autograd.Function):
    """Heaviside forward (spike at v >= θ), ``dsdu(v/θ - 1)/θ`` backward."""

    @staticmethod
    def forward(ctx, v, dsdu):
        ctx.save_for_backward(v)
        ctx.dsdu = dsdu
        return (v - THETA >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * ctx.dsdu(v / THETA - 1) / THETA, None


def _bptt_by_hand(leak, dsdu, detach_reset):
    """An independent BPTT of one soft-reset IF/LIF layer on X: an explicit loop with autograd,
    ``L = Σ c·s``; returns (spikes, dL/dx)."""
    x = X.clone().requires_grad_(True)
    v, out = torch.zeros_like(X[0]), []
    for t in range(T):
        v = leak * v + x[t]
        s = _HandSpike.apply(v, dsdu)
        v = v - THETA * (s.detach() if detach_reset else s)
        out.append(s)
    s = torch.stack(out)
    (g,) = torch.autograd.grad((C * s).sum(), x)
    return s.detach(), g


HAND_SURROGATES = {
    "linear": lambda u, w: torch.clamp(1 - u.abs() / w, min=0) / w,
    "rectangular": lambda u, w: (u.abs() < w / 2).float() / w,
    "sigmoid": lambda u, w: (4 / w) * torch.sigmoid(4 * u / w) * (1 - torch.sigmoid(4 * u / w)),
    "atan": lambda u, w: (1 / w) / (1 + (math.pi * u / w) ** 2),
    "exp": lambda u, w: torch.exp(-2 * u.abs() / w) / w,
}
NEURONS = [("if", 1.0), ("lif", 0.9)]


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("neuron,leak", NEURONS)
def test_hand_bptt_is_the_models_own_backward(neuron, leak, detach_reset):
    """The hand loop, with the training surrogate (the studies' linear one: 0.3·max(0, 1 - |u|)),
    reproduces SpikingJelly's own backward at both reset rules: the reference is sound."""
    s, g = _layer_grad(_layer(neuron, leak, detach_reset), None)
    s_hand, g_hand = _bptt_by_hand(leak, lambda u: 0.3 * torch.clamp(1 - u.abs(), min=0), detach_reset)
    assert torch.equal(s, s_hand)
    torch.testing.assert_close(g, g_hand)


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("neuron,leak", NEURONS)
@pytest.mark.parametrize("surrogate,width", [("linear", 1.0), ("rectangular", 0.5), ("sigmoid", 0.7),
                                             ("atan", 0.5), ("exp", 2.0)])
def test_bptt_attack_surrogate_by_hand(neuron, leak, surrogate, width, detach_reset):
    s, g = _layer_grad(_layer(neuron, leak, detach_reset), {"mode": "bptt", "surrogate": surrogate, "width": width})
    s_hand, g_hand = _bptt_by_hand(leak, lambda u: HAND_SURROGATES[surrogate](u, width), detach_reset)
    assert torch.equal(s, s_hand)
    torch.testing.assert_close(g, g_hand)


def test_reset_rule_changes_the_attack_gradient():
    """detach_reset is followed at attack time: the two rules give different input gradients."""
    spec = {"mode": "bptt", "surrogate": "atan", "width": 0.5}
    _, g_detached = _layer_grad(_layer("if", 1.0, True), spec)
    _, g_through = _layer_grad(_layer("if", 1.0, False), spec)
    assert not torch.allclose(g_detached, g_through)


def test_surrogates_have_unit_area():
    u = torch.linspace(-60, 60, 600001)
    for name in ATTACK_SURROGATES:
        area = float(torch.trapezoid(surrogate_grad(name, u, 0.5), u))
        assert abs(area - 1.0) < 2e-3, (name, area)


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("neuron,leak", [("if", 1.0), ("lif", 0.8)])
def test_ste_by_hand(neuron, leak, detach_reset):
    s, g = _layer_grad(_layer(neuron, leak, detach_reset), "ste")
    s_hand, g_hand = _bptt_by_hand(leak, torch.ones_like, detach_reset)
    assert torch.equal(s, s_hand)
    torch.testing.assert_close(g, g_hand)


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("neuron,leak", [("if", 1.0), ("lif", 0.8)])
def test_bptr_is_snn_rats_released_rule(neuron, leak, detach_reset):
    """SNN-RAT's RateBp: dL/dx[t] = dL/ds[t] · 1[mean_t s > 0] (θ = 1 there; 1/θ here), no upper limit."""
    s, g = _layer_grad(_layer(neuron, leak, detach_reset), "bptr")
    fired = (s.mean(0, keepdim=True) > 0).float()
    assert 0 < float(fired.sum()) < fired.numel(), "the test input needs silent and firing neurons"
    assert bool((s.mean(0) == 1).any()), "the test input needs a saturated neuron (no upper limit)"
    torch.testing.assert_close(g, C * fired / THETA)
    # eval.grad_mode "rate" is the same estimator
    _, g_rate = _layer_grad(_layer(neuron, leak, detach_reset), GRAD_MODE_ESTIMATORS["rate"])
    torch.testing.assert_close(g_rate, g)


@pytest.mark.parametrize("neuron,leak", [("if", 1.0), ("lif", 0.7)])
def test_rga_by_hand(neuron, leak):
    _, g = _layer_grad(_layer(neuron, leak), "rga")
    u = X.mean(0) / THETA
    knee = 1 - leak
    slope = torch.where((u > 0) & (u < knee), torch.full_like(u, RGA_GAMMA),
                        torch.where((u > knee) & (u < 2), torch.full_like(u, (1 - RGA_GAMMA * knee) / (1 + leak)),
                                    torch.zeros_like(u)))
    torch.testing.assert_close(g, (C.sum(0) * slope / (THETA * T)).expand_as(X))


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("gamma", [0.5, 1.5])
def test_hart_by_hand(gamma, detach_reset):
    leak = 0.9
    s, g = _layer_grad(_layer("lif", leak, detach_reset), {"mode": "hart", "gamma": gamma})
    u = _membranes(leak, s) / THETA - 1
    d = torch.clamp(1 - u.abs() / gamma, min=0) / gamma / THETA  # triangle of width γ, no path through time
    torch.testing.assert_close(g, (C * d).mean(0, keepdim=True).expand_as(X))


class OneLayerSNN(nn.Module):
    """x -> direct encoder -> W1 -> spiking layer -> W2 -> mean over T (the project's SNN layout)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.meta = {"kind": "snn"}
        self.encoder = Encoder("direct", T, [0.5], [0.25])
        self.layers = nn.ModuleList([nn.Flatten(), nn.Linear(4, 6, bias=False),
                                     SpikingLayer("if", 1.0, THETA, "linear", "torch"), nn.Linear(6, 3, bias=False)])

    def spiking_layers(self):
        return [self.layers[2]]

    def forward(self, x):
        h = self.encoder(x)
        h = self.layers[1](self.layers[0](h.flatten(0, 1))).view(T, x.shape[0], -1)
        s = self.layers[2](h)
        return self.layers[3](s.flatten(0, 1)).view(T, x.shape[0], -1).mean(0)


def test_act_is_the_gradient_of_the_ann_equivalent():
    model = OneLayerSNN().eval()
    x = torch.rand(2, 1, 2, 2)
    c = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.9, -1.1]])
    xg = x.clone().requires_grad_(True)
    out = EstimatedModel(model, parse_grad("act"))(xg)
    with torch.no_grad():
        assert torch.equal(out, model(x))
    (g,) = torch.autograd.grad((c * out).sum(), xg)
    W1, W2 = model.layers[1].weight, model.layers[3].weight
    z = ((x - 0.5) / 0.25).flatten(1) @ W1.T
    inside = ((z > 0) & (z < THETA)).float() / THETA
    by_hand = (((c @ W2) * inside) @ W1) / 0.25
    torch.testing.assert_close(g.flatten(1), by_hand)


def test_parse_grad_errors_name_the_key():
    with pytest.raises(UserError, match=r"^grad.mode: 'bprop' is not one of"):
        parse_grad({"mode": "bprop"})
    with pytest.raises(UserError, match=r"^grad.width: must be a number > 0"):
        parse_grad({"mode": "bptt", "surrogate": "atan", "width": 0})
    with pytest.raises(UserError, match=r"^grad.surrogate: only mode bptt"):
        parse_grad({"mode": "hart", "surrogate": "atan"})
    with pytest.raises(UserError, match=r"^grad: unknown key\(s\) sharpness"):
        parse_grad({"mode": "bptt", "sharpness": 2})
    assert parse_grad("rate").mode == "bptr"
