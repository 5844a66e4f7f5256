"""The fused IF/LIF neuron (issue #7) against SpikingJelly's multistep neurons in training mode:
forward spikes bit for bit, input gradients within 1e-5 (random upstream gradient, float32).

Both implementations are checked: the compiled native kernel (when a C compiler is available) and
the pure-torch loops (``SPKROBUST_FUSED_NATIVE=0`` / non-float32 fallback)."""
from __future__ import annotations

import functools
import itertools
import warnings

import pytest
import torch

from spkrobust.nets import fused
from spkrobust.nets.fused import FusedNode, sj_decay
from spkrobust.nets.neurons import SpikingLayer, make_surrogate
from spkrobust.config.vocab import GRAD_MODE_ESTIMATORS, SURROGATES
from spkrobust.nets.estimators import layer_estimate, parse_grad

warnings.filterwarnings("ignore", category=FutureWarning)

LEAKS = (1.0, 0.99, 0.9, 0.5)
THRESHOLDS = (1.0, 0.37, 2.5)
TS = (1, 4, 16)


def _sj_node(leak, th, sg):
    from spikingjelly.activation_based import neuron

    if leak == 1.0:
        n = neuron.IFNode(v_threshold=th, v_reset=None, surrogate_function=sg, detach_reset=False,
                          step_mode="m", backend="torch")
    else:
        n = neuron.LIFNode(tau=1.0 / (1.0 - leak), decay_input=False, v_threshold=th, v_reset=None,
                           surrogate_function=sg, detach_reset=False, step_mode="m", backend="torch")
    return n.train()


def _inputs(T, th, shape=(6, 3, 5, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    # mean above zero so that every layer spikes often, spread so that some neurons never do
    return torch.randn(T, *shape, generator=g) * (0.8 * th) + 0.45 * th


@pytest.fixture(params=["native", "torch"])
def impl(request, monkeypatch):
    if request.param == "native":
        if not fused._load_native():
            pytest.skip(f"native kernel unavailable: {fused.native_status()}")
    else:
        monkeypatch.setattr(fused, "_use_native", lambda *t: False)
    return request.param


def _compare(leak, th, sgn, T, shape=(6, 3, 5, 7), seed=0):
    x = _inputs(T, th, shape, seed).requires_grad_()
    ref = _sj_node(leak, th, make_surrogate(sgn, th))
    s_ref = ref(x)
    up = torch.randn(s_ref.shape, generator=torch.Generator().manual_seed(seed + 1))
    (g_ref,) = torch.autograd.grad(s_ref, x, up)

    node = FusedNode(th, leak, make_surrogate(sgn, th))
    s = node(x)
    (g,) = torch.autograd.grad(s, x, up)
    node.reset()  # the node carries its membrane between calls, as SpikingJelly's
    with torch.no_grad():
        s_ng = node(x)
    return s_ref, s, s_ng, g_ref, g


@pytest.mark.parametrize("leak,th,sgn,T", list(itertools.product(LEAKS, THRESHOLDS, SURROGATES, TS)))
def test_matches_spikingjelly(impl, leak, th, sgn, T):
    s_ref, s, s_ng, g_ref, g = _compare(leak, th, sgn, T)
    assert s.dtype == s_ref.dtype and s.shape == s_ref.shape
    assert torch.equal(s, s_ref), "forward spikes differ"
    assert torch.equal(s_ng, s_ref), "no_grad forward differs"
    if T > 1:
        rate = s_ref.mean().item()
        assert 0.05 < rate < 0.95, f"test input gives too few/many spikes ({rate:.3f})"
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("leak", [1.0, 0.9])
def test_large_layer_multithreaded(impl, leak):
    """A layer large enough to be split across threads (and over several kernel blocks)."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        s_ref, s, s_ng, g_ref, g = _compare(leak, 1.0, "linear", 5, shape=(4, 8, 33, 33), seed=3)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(s, s_ref) and torch.equal(s_ng, s_ref)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


def test_decay_is_spikingjelly_arithmetic():
    for leak in LEAKS:
        tau = 1.0 / (1.0 - leak) if leak != 1.0 else None
        assert sj_decay(leak) == (1.0 if tau is None else 1.0 - 1.0 / tau)


def test_generic_surrogate_path(impl):
    """A surrogate the kernel has no formula for: its ``derivative`` is used."""
    from spikingjelly.activation_based import surrogate

    class Custom(surrogate.Sigmoid):
        pass

    sg = Custom(alpha=3.0)
    sg.derivative = lambda x, a=3.0: a * torch.sigmoid(a * x) * (1 - torch.sigmoid(a * x))
    x = _inputs(6, 1.0).requires_grad_()
    ref = _sj_node(0.9, 1.0, surrogate.Sigmoid(alpha=3.0))
    s_ref = ref(x)
    up = torch.randn_like(s_ref)
    (g_ref,) = torch.autograd.grad(s_ref, x, up)
    s = FusedNode(1.0, 0.9, sg)(x)
    (g,) = torch.autograd.grad(s, x, up)
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


def test_float64_and_noncontiguous_fall_back():
    x = _inputs(4, 1.0).double().transpose(1, 2).requires_grad_()
    ref = _sj_node(0.9, 1.0, make_surrogate("linear", 1.0))
    s_ref = ref(x)
    (g_ref,) = torch.autograd.grad(s_ref.sum(), x)
    s = FusedNode(1.0, 0.9, make_surrogate("linear", 1.0))(x)
    (g,) = torch.autograd.grad(s.sum(), x)
    assert s.dtype == torch.float64 and torch.equal(s, s_ref)
    torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)


def test_module_interface():
    from spikingjelly.activation_based import functional

    node = FusedNode(1.0, 0.99, make_surrogate("linear", 1.0))
    assert node.step_mode == "m"
    net = torch.nn.Sequential(node)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        functional.reset_net(net)  # no "not a MemoryModule" warning
    node.reset()
    x = _inputs(3, 1.0)
    with torch.no_grad():
        a = node(x)
        carried = node(x)  # a second call continues from the membrane the first left
        ref = _sj_node(0.99, 1.0, make_surrogate("linear", 1.0))
        ref(x)
        assert torch.equal(carried, ref(x)) and not torch.equal(carried, a)
    node.reset()
    b = node(x)  # after reset(): from rest again
    assert torch.equal(a, b) and not b.requires_grad
    with pytest.raises(ValueError, match="reset"):
        node(x[:, :1])  # a carried membrane of another shape
    node.reset()
    node.eval()  # eval mode keeps the surrogate gradient
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(node(xg).sum(), xg)
    assert g.abs().sum() > 0
    with pytest.raises(ValueError):
        FusedNode(1.0, 0.0, make_surrogate("linear", 1.0))


@pytest.mark.parametrize("detach", [False, True])
def test_detach_reset_two_step_one_neuron_by_hand(impl, detach):
    """Two steps, one LIF neuron, the same input current x at both steps, loss s[0] + s[1]:
    h0 = x, s0 = H(h0 - θ), v0 = h0 - θ s0, h1 = λ v0 + x, s1 = H(h1 - θ). With sg' the studies'
    surrogate, dL/dx = sg'(h0) + sg'(h1) (1 + λ dv0/dx), where dv0/dx = 1 with a detached reset and
    1 - θ sg'(h0) with the reset in the graph. SpikingJelly's torch node and the fused node (native
    kernel and torch loops) must both give it."""
    th, leak, x0 = 1.0, 0.9, 1.2

    def sgd(h):  # 0.3/θ * max(0, 1 - |h - θ|/θ)
        return 0.3 / th * max(0.0, 1.0 - abs(h - th) / th)

    h0 = x0
    v0 = h0 - th * (h0 >= th)
    h1 = leak * v0 + x0
    dv0 = 1.0 if detach else 1.0 - th * sgd(h0)
    expected = sgd(h0) + sgd(h1) * (1.0 + leak * dv0)
    assert h0 >= th and sgd(h0) > 0 and sgd(h1) > 0  # the reset term matters here
    for backend in ("torch", "fused"):
        layer = SpikingLayer("lif", leak, th, "linear", backend, detach_reset=detach)
        x = torch.tensor([x0], requires_grad=True)
        s = layer(x.view(1, 1, 1).expand(2, 1, 1))
        assert s.flatten().tolist() == [1.0, float(h1 >= th)]
        (g,) = torch.autograd.grad(s.sum(), x)
        assert g.item() == pytest.approx(expected, rel=1e-6), (backend, detach)


@pytest.mark.parametrize("neuron_type,leak", [("if", 1.0), ("lif", 0.99), ("lif", 0.5)])
@pytest.mark.parametrize("sgn", SURROGATES)
@pytest.mark.parametrize("detach", [False, True])
def test_spiking_layer_backends_agree(neuron_type, leak, sgn, detach):
    th = 0.8
    a = SpikingLayer(neuron_type, leak, th, sgn, "torch", detach_reset=detach)
    b = SpikingLayer(neuron_type, leak, th, sgn, "fused", detach_reset=detach)
    assert isinstance(b.node, FusedNode)
    for mode in (True, False):
        a.train(mode)
        b.train(mode)
        x = _inputs(8, th, seed=5).requires_grad_()
        sa, sb = a(x), b(x)
        assert torch.equal(sa, sb)
        up = torch.randn_like(sa)
        (ga,) = torch.autograd.grad(sa, x, up)
        (gb,) = torch.autograd.grad(sb, x, up)
        torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-5)
        # a second call starts from rest on both backends
        assert torch.equal(a(x.detach()), b(x.detach()))


def test_spiking_layer_rate_mode_agrees():
    a = SpikingLayer("lif", 0.9, 1.0, "linear", "torch")
    b = SpikingLayer("lif", 0.9, 1.0, "linear", "fused")
    a.estimator = b.estimator = functools.partial(layer_estimate, parse_grad(GRAD_MODE_ESTIMATORS["rate"]))
    x = _inputs(8, 1.0, seed=7).requires_grad_()
    sa, sb = a(x), b(x)
    assert torch.equal(sa, sb)
    up = torch.randn_like(sa)
    (ga,) = torch.autograd.grad(sa, x, up)
    (gb,) = torch.autograd.grad(sb, x, up)
    torch.testing.assert_close(gb, ga)


def test_exact_over_repeated_calls(impl):
    """SpikingJelly's TorchScript charge functions are re-optimised after a few calls; the spikes
    must stay identical call after call."""
    th, leak = 0.37, 0.9
    sg = make_surrogate("linear", th)
    ref, node = _sj_node(leak, th, sg), FusedNode(th, leak, sg)
    for i in range(6):
        x = _inputs(16, th, shape=(32, 100), seed=10 + i)
        ref.reset()
        node.reset()
        assert torch.equal(ref(x), node(x)), f"call {i}"
