"""The adaptive estimators ASSG (spkrobust.nets.assg), PDSG (spkrobust.nets.pdsg) and mix (spkrobust.nets.mix):
each against an independent hand-written BPTT of one IF/LIF layer at both reset rules, ASSG's state reset per
run and frozen after the first EOT draw, forward outputs bit-identical to the model's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import helpers.robust as H
import torch
import torch.nn.functional as F

from spkrobust.attacks import registry as A
from spkrobust.attacks import sapgd as S
from spkrobust.errors import UserError
from spkrobust.nets.assg import ASSGState, sharpness_scale, shape_grad
from spkrobust.nets.estimators import layer_estimate, parse_grad, with_estimator
from spkrobust.nets.neurons import SpikingLayer

THETA, T = 0.8, 3
X = torch.tensor([[[0.3, 0.9, 1.5, -0.2, 0.7], [0.1, 0.4, 0.8, 1.1, -0.3]],
                  [[0.6, 0.1, 1.2, 0.4, 0.75], [0.9, 0.2, 0.3, 0.5, 1.4]],
                  [[0.2, 0.5, 1.9, 0.3, 0.9], [0.4, 1.0, -0.1, 0.6, 0.2]]])  # [T, B=2, 5 features]
C = torch.linspace(-1.0, 1.5, X.numel()).reshape(X.shape)
NEURONS = [("if", 1.0), ("lif", 0.9)]


def _layer(neuron, leak, detach_reset):
    return SpikingLayer(neuron, leak, THETA, "linear", "torch", detach_reset=detach_reset).eval()


def _est_grad(layer, spec, x=X, c=C, state=None):
    xg = x.clone().requires_grad_(True)
    layer.estimator = lambda lay, xs, s: layer_estimate(parse_grad(spec), lay, xs, s, state, 0)
    s = layer(xg)
    (g,) = torch.autograd.grad((c * s).sum(), xg)
    layer.estimator = None
    with torch.no_grad():
        assert torch.equal(s, layer(x)), "forward spikes changed"
    return g


def _hand_bptt(x, leak, detach_reset, dsdv_of):
    """Soft-reset IF/LIF by hand: spike when v >= θ; ``dsdv_of(t, v)`` (numpy) is ds/dv at step t."""
    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, d):
            ctx.save_for_backward(d)
            return (v >= THETA).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.saved_tensors[0], None

    xg = x.clone().requires_grad_(True)
    v, out = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        v = leak * v + xg[t]
        d = torch.as_tensor(dsdv_of(t, v.detach().double().numpy()), dtype=x.dtype)
        s = Spike.apply(v, d)
        v = v - THETA * (s.detach() if detach_reset else s)
        out.append(s)
    return torch.stack(out), xg


def _hand_grad(x, c, leak, detach_reset, dsdv_of):
    s, xg = _hand_bptt(x, leak, detach_reset, dsdv_of)
    (g,) = torch.autograd.grad((c * s).sum(), xg)
    return g


# ---- ASSG -----------------------------------------------------------------------------------------

HAND_SHAPES = {  # d s / d x at sharpness α, written out from the reference's five surrogates
    "atan": lambda x, a: a / 2 / (1 + (math.pi / 2 * a * x) ** 2),
    "linear": lambda x, a: np.maximum(a - a * a * np.abs(x), 0),
    "rectangular": lambda x, a: a / 2 * (np.abs(x) < 1 / a),
    "sigmoid": lambda x, a: a / (1 + np.exp(-a * x)) * (1 - 1 / (1 + np.exp(-a * x))),
    "gaussian": lambda x, a: a / math.sqrt(2 * math.pi) * np.exp(-0.5 * (a * x) ** 2),
}


def test_atan_sharpness_is_the_references_and_every_shape_has_mass_2a_inside_m():
    assert sharpness_scale("atan", 0.425) == pytest.approx(2 * math.tan(0.425 * math.pi) / math.pi)
    M = 0.37
    xs = torch.linspace(-M, M, 200001, dtype=torch.float64)
    for shape in HAND_SHAPES:
        for a in (0.2, 0.425):
            alpha = torch.full_like(xs, sharpness_scale(shape, a) / M)
            inside = float(torch.trapezoid(shape_grad(shape, xs, alpha), xs))
            assert inside == pytest.approx(2 * a, abs=2e-4), (shape, a)
            np.testing.assert_allclose(shape_grad(shape, xs, alpha).numpy(), HAND_SHAPES[shape](xs.numpy(), alpha.numpy()),
                                       rtol=1e-9, atol=1e-12)


def _hand_assg_moments(x_hist, beta1=0.9, beta2=0.9):
    """M, D after each pass of a list of membranes-minus-threshold (one array per pass), from M = 1, D = 0."""
    m, d = np.ones_like(x_hist[0]), np.zeros_like(x_hist[0])
    for x in x_hist:
        m = beta1 * m + (1 - beta1) * np.abs(x)
        d = beta2 * d + (1 - beta2) * np.abs(np.abs(x) - m)
    return m, d


@pytest.mark.parametrize("shape", ["atan", "linear", "gaussian"])
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("neuron,leak", NEURONS)
def test_assg_two_passes_by_hand(neuron, leak, detach_reset, shape):
    """Pass 1 from M = 1, D = 0; pass 2 on other inputs uses the moments updated twice (per step, image, neuron)."""
    spec = {"mode": "assg", "shape": shape, "a": 0.425, "relax": 1.5}
    layer = _layer(neuron, leak, detach_reset)
    state = ASSGState(shape, 0.425, 1.5, 0.9, 0.9)
    x2 = X * 1.3 - 0.1
    g1 = _est_grad(layer, spec, X, C, state)
    g2 = _est_grad(layer, spec, x2, C, state)
    scale = sharpness_scale(shape, 0.425)
    membranes = {}

    def record(tag):
        def f(t, v):
            membranes.setdefault(tag, {})[t] = v - THETA
            return np.zeros_like(v)
        return f

    _hand_bptt(X, leak, detach_reset, record(1))
    _hand_bptt(x2, leak, detach_reset, record(2))

    def dsdv(passes):
        def f(t, v):
            m, d = _hand_assg_moments([membranes[p][t] for p in passes])
            return HAND_SHAPES[shape](v - THETA, scale / (m + 1.5 * d + 1e-4))
        return f

    torch.testing.assert_close(g1, _hand_grad(X, C, leak, detach_reset, dsdv([1])))
    torch.testing.assert_close(g2, _hand_grad(x2, C, leak, detach_reset, dsdv([1, 2])))


def _snn_grad(model, x, y):
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (g,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), xg)
    return out.detach(), g


def test_assg_state_resets_per_run_and_freezes_after_the_first_eot_draw():
    model = H.snn(seed=3, T=2, encoder="direct")
    est, _ = with_estimator(model, "assg")
    torch.manual_seed(0)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 4, 7])
    with torch.no_grad():
        ref = model(x)
    est.begin_run(2)
    out, g1 = _snn_grad(est, x, y)
    assert torch.equal(out, ref), "assg changed the forward outputs"
    snapshot = {k: (m.clone(), d.clone()) for k, (m, d) in est.state.moments.items()}
    assert snapshot, "the first pass recorded no moments"
    _, g2 = _snn_grad(est, x, y)  # the second EOT draw of the step: frozen
    assert est.draw == 1 and torch.equal(g1, g2)
    assert all(torch.equal(est.state.moments[k][0], m) and torch.equal(est.state.moments[k][1], d)
               for k, (m, d) in snapshot.items())
    _, g3 = _snn_grad(est, x, y)  # the next step updates again
    assert est.draw == 0 and not torch.equal(g1, g3)
    est.begin_run(2)  # a new run or restart starts afresh
    _, g4 = _snn_grad(est, x, y)
    assert torch.equal(g1, g4)


def test_every_attack_loop_restarts_the_assg_state():
    """Two runs of the same attack on the same estimated model give the same set: each starts at M = 1, D = 0."""
    model = H.snn(seed=3, T=2, encoder="direct")
    est, _ = with_estimator(model, {"mode": "assg", "shape": "sigmoid"})
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 4, 7, 1])
    for atype, params in (("sapgd", {"steps": 3}), ("pgd", {"steps": 3, "alpha": "0.25*eps"}),
                          ("apgd", {"steps": 3, "n_restarts": 2})):
        _, p = A.resolve_attack({"type": atype, **params}, 0.05)
        runs = []
        for _ in range(2):
            torch.manual_seed(1)
            runs.append(A.ATTACKS[atype](est, p, x, y, 0.05, 1, 5)[0])
        assert torch.equal(runs[0], runs[1]), atype
    # APGD/APGDT restart the state at each of their runs: only the last run's 1 + steps gradient passes count
    with torch.no_grad():
        y = model(x).argmax(1)  # APGD attacks only the images the source gets right
    for atype in ("apgd", "apgdt"):
        _, p = A.resolve_attack({"type": atype, "steps": 3, "n_restarts": 2}, 0.05)
        A.ATTACKS[atype](est, {**p, "target_classes": 2} if atype == "apgdt" else p, x, y, 0.05, 1, 5)
        assert est.grad_passes == 1 + 3, atype


# ---- PDSG -----------------------------------------------------------------------------------------

def _hand_pdsg(channel_axis_dims):
    def f(t, v, hist=[]):  # noqa: B006  (the membranes so far, per call of _hand_bptt)
        if t == 0:
            hist.clear()
        hist.append(v)
        h = np.stack(hist)
        sigma = h.std(axis=channel_axis_dims, ddof=1, keepdims=True)[0]
        sigma = np.where(np.isfinite(sigma) & (sigma != 0), sigma, 1.0)
        x = v - THETA
        return np.exp(-((x - sigma / 2) ** 2) / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
    return f


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("neuron,leak", NEURONS)
def test_pdsg_by_hand_linear_and_conv(neuron, leak, detach_reset):
    layer = _layer(neuron, leak, detach_reset)
    g = _est_grad(layer, "pdsg")
    torch.testing.assert_close(g, _hand_grad(X, C, leak, detach_reset, _hand_pdsg((0, 1))))  # per feature
    torch.manual_seed(2)
    xc = torch.rand(T, 2, 3, 2, 2) * 1.6  # [T, B, C, H, W]: per channel over steps so far, batch, H, W
    cc = torch.randn_like(xc)
    g = _est_grad(layer, "pdsg", xc, cc)
    torch.testing.assert_close(g, _hand_grad(xc, cc, leak, detach_reset, _hand_pdsg((0, 1, 3, 4))))


# ---- mix ------------------------------------------------------------------------------------------

MIX = [{"mode": "bptt", "surrogate": "atan", "width": 0.5}, {"mode": "hart", "gamma": 0.5}, "pdsg"]


@pytest.mark.parametrize("enc", ["direct", "poisson"])
def test_mix_mean_is_the_mean_of_the_members_gradients(enc):
    model = H.snn(seed=3, T=2, encoder=enc)
    torch.manual_seed(0)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 4, 7])
    src, spec = with_estimator(model, {"mode": "mix", "members": MIX, "combine": "mean"})
    assert spec.label() == "mix-mean[bptt-atan-w0.5+hart-g0.5+pdsg]"
    torch.manual_seed(5)
    with torch.no_grad():
        ref = model(x)
    torch.manual_seed(5)
    out, g = _snn_grad(src, x, y)
    assert torch.equal(out, ref)
    members = []
    for m in MIX:
        torch.manual_seed(5)
        members.append(_snn_grad(with_estimator(model, m)[0], x, y)[1])
    torch.testing.assert_close(g, sum(members) / len(members))


def test_mix_maxloss_picks_one_members_gradient_per_image():
    model = H.snn(seed=3, T=2, encoder="direct")
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 4, 7, 1])
    src, _ = with_estimator(model, {"mode": "mix", "members": MIX, "combine": "maxloss"})
    out, g = _snn_grad(src, x, y)
    with torch.no_grad():
        assert torch.equal(out, model(x))
    members = torch.stack([_snn_grad(with_estimator(model, m)[0], x, y)[1] for m in MIX])
    pick = src.picks[-1]
    torch.testing.assert_close(g, members[pick, torch.arange(4)])
    # the pick is the member whose signed step of 1/255 raises the CE loss most (to first order in the logits)
    with torch.no_grad():
        gains = torch.stack([F.cross_entropy(model(torch.clamp(x + g_k.sign() / 255, 0, 1)), y, reduction="none")
                             for g_k in members])
    assert (gains.argmax(0) == pick).float().mean() >= 0.5


def test_parse_errors_name_the_key():
    with pytest.raises(UserError, match=r"^grad.members: mode mix needs"):
        parse_grad({"mode": "mix", "members": ["pdsg"]})
    with pytest.raises(UserError, match=r"^grad.a: must be a number in \(0, 0.5\)"):
        parse_grad({"mode": "assg", "a": 0.6})
    with pytest.raises(UserError, match=r"^grad.shape: 'box' is not one of"):
        parse_grad({"mode": "assg", "shape": "box"})
    with pytest.raises(UserError, match=r"^grad.gamma: a list is allowed only for gamma \(hart\), a \(assg\)"):
        parse_grad({"mode": "bptt", "gamma": [0.5, 1.0]})
    with pytest.raises(UserError, match=r"^grad.a: must be a number in"):
        parse_grad({"mode": "assg", "a": [0.4, 0.7]})
    assert parse_grad({"mode": "assg", "a": [0.4, 0.45]}).label() == "assg-atan-a0.4,0.45"
    with pytest.raises(UserError, match=r"^grad.members: only mode mix"):
        parse_grad({"mode": "hart", "members": ["pdsg", "ste"]})
    assert parse_grad({"mode": "assg", "relax": 1.0}).label() == "assg-atan-a0.425-relax1"
    spec = parse_grad({"mode": "mix", "members": ["assg", {"mode": "hart", "gamma": 2}], "combine": "maxloss"})
    assert parse_grad(spec.as_dict()) == spec


def test_sapgd_with_assg_and_eot_on_a_poisson_snn():
    model = H.snn(seed=3, T=2, encoder="poisson")
    src, _ = with_estimator(model, "assg")
    torch.manual_seed(0)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 4, 7])
    xa, g = S.sapgd(src, x, y, 0.05, steps=3, eot_samples=2, seed=1)
    assert float((xa - x).abs().max()) <= 0.05 + 1e-6 and g is not None
    assert src.grad_passes == 2 * 3  # start + 2 iterates with gradient, 2 draws each; the last iterate needs none
