"""Spiking neurons on SpikingJelly: the studies' LIF equation and surrogate, input gradients in eval mode, backends."""
from __future__ import annotations


import pytest
import torch

from spkrobust import load_model
from spkrobust.attacks.base import set_grad_mode
from spkrobust.errors import UserError
from spkrobust.nets.models import build_model, save_model

from helpers.robust import snn_meta


def test_lif_layer_follows_the_studies_equation():
    """v[t] = leak*v[t-1] + x[t]; spike if v >= θ; soft reset by subtracting θ."""
    from spkrobust.nets.neurons import SpikingLayer

    torch.manual_seed(0)
    x = torch.rand(12, 5, 7) * 0.8
    for leak in (1.0, 0.9):
        layer = SpikingLayer("lif" if leak < 1 else "if", leak, 0.7, "linear", "torch")
        s = layer(x)
        v = torch.zeros(5, 7)
        for t in range(12):
            v = leak * v + x[t]
            ref = (v >= 0.7).float()
            v = v - 0.7 * ref
            assert torch.equal(s[t], ref)


def test_surrogate_is_the_studies_piecewise_linear():
    from spkrobust.nets.neurons import make_surrogate

    theta = 0.5
    sg = make_surrogate("linear", theta)
    v = torch.tensor([0.5, 0.75, 0.25, 1.2, 0.0], requires_grad=True)
    sg(v - theta).sum().backward()
    expected = 0.3 * torch.clamp(1 - (v.detach() / theta - 1).abs(), min=0) / theta
    assert torch.allclose(v.grad, expected)


def test_loaded_snn_gives_nonzero_input_gradient_in_eval_mode(tmp_path):
    """SpikingJelly neurons give no gradient in eval(); our SNN must, in the mode attacks use."""
    torch.manual_seed(0)
    snn = build_model(snn_meta(thresholds=[0.3] * 5))
    path = tmp_path / "snn.pt"
    save_model(snn, path, name="snn", replica=1, dataset="fashion_mnist", seed=0, clean_acc=0.5)
    model = load_model(path)
    assert not model.training and model.stochastic
    for key in ("kind", "arch", "neuron", "leak", "T", "encoder", "thresholds", "dataset", "seed", "clean_acc"):
        assert key in model.meta
    for mode in ("bptt", "rate"):
        set_grad_mode(model, mode)
        x = torch.rand(4, 1, 28, 28, requires_grad=True)
        torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, mode
        assert (x.grad.flatten(1).abs().sum(1) > 0).all(), f"{mode}: some inputs got an all-zero gradient"


def test_stock_spikingjelly_eval_mode_really_has_no_gradient():
    """Documents the trap our SpikingLayer avoids (DESIGN.md §4)."""
    from spikingjelly.activation_based import neuron

    node = neuron.LIFNode(tau=2.0, decay_input=False, v_reset=None, step_mode="m").eval()
    x = torch.rand(4, 3, requires_grad=True)
    assert not node(x).requires_grad


def test_cupy_backend_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cupy backend may be available")
    with pytest.raises(UserError, match="cupy.*CUDA"):
        build_model(snn_meta(backend="cupy", thresholds=None))


def test_auto_backend_falls_back_on_cpu():
    snn = build_model(snn_meta(backend="auto", thresholds=None))
    assert snn.backend in ("fused", "torch")

