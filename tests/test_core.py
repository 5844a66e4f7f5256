"""Core library on real Fashion-MNIST: data, models, neurons, load_model gradients, conversion, training."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ann_cfg
from spkrobust import load_model
from spkrobust.data import load_prepared, prepare
from spkrobust.errors import FileProblem, UserError
from spkrobust.io import atomic_save
from spkrobust.models import build_model, default_meta, save_model

MEAN, STD = [0.286], [0.353]


def snn_meta(**kw):
    base = dict(T=4, neuron="lif", leak=0.9, backend="torch", encoder="poisson")
    base.update(kw)
    return default_meta("snn", "vgg5", 1, 28, 10, MEAN, STD, **base)


# ---- data ---------------------------------------------------------------------------------------

def test_prepare_writes_canonical_seeded_subsets(small_data, small_data_path):
    d = small_data
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (3000, 1, 28, 28)
    assert d.test_x.shape == (500, 1, 28, 28) and len(d.calib_idx) == 128
    assert len(d.classes) == 10 and d.classes[0] == "T-shirt/top"
    assert len(d.source_sha256) == 64
    assert set(d.test_y.tolist()) == set(range(10))
    again = prepare("fashion_mnist", "data", train_size=3000, test_size=500, calib_size=128, seed=0)
    assert torch.equal(again["train_x"], d.train_x) and torch.equal(again["test_y"], d.test_y)
    other = prepare("fashion_mnist", "data", train_size=3000, test_size=500, calib_size=128, seed=1)
    assert not torch.equal(other["train_y"], d.train_y)


def test_truncated_prepared_file_is_a_clear_error(small_data_path, tmp_path):
    bad = tmp_path / "data.pt"
    bad.write_bytes(small_data_path.read_bytes()[:5000])
    with pytest.raises(FileProblem, match=str(bad)):
        load_prepared(bad)


def test_missing_cifar_names_the_files_and_where_to_put_them(tmp_path):
    with pytest.raises(FileProblem) as e:
        prepare("cifar10", tmp_path)
    msg = str(e.value)
    assert "data_batch_1" in msg and str(tmp_path) in msg and "\n" not in msg


# ---- models and neurons -------------------------------------------------------------------------

@pytest.mark.parametrize("arch,c,size,classes", [("vgg5", 1, 28, 10), ("vgg9", 3, 32, 100), ("vgg11", 3, 32, 100), ("vgg11", 1, 28, 10), ("vgg11_tv", 1, 28, 10)])
def test_vgg_ann_and_snn_share_weights_and_shapes(arch, c, size, classes):
    ann = build_model(default_meta("ann", arch, c, size, classes, [0.5] * c, [0.25] * c))
    snn = build_model(default_meta("snn", arch, c, size, classes, [0.5] * c, [0.25] * c, T=2, backend="torch"))
    assert all(not getattr(m, "bias", None) is not None for m in ann.modules() if isinstance(m, torch.nn.Conv2d))
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in ann.modules())
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in ann.modules())
    missing = snn.load_state_dict({k: v for k, v in ann.state_dict().items() if k not in ("mean", "std")}, strict=False)
    assert all(k.startswith("encoder.") for k in missing.missing_keys) and not missing.unexpected_keys
    x = torch.rand(3, c, size, size)
    assert ann(x).shape == (3, classes) and snn(x).shape == (3, classes)


def test_lif_layer_follows_the_studies_equation():
    """v[t] = leak*v[t-1] + x[t]; spike if v >= θ; soft reset by subtracting θ."""
    from spkrobust.neurons import SpikingLayer

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
    from spkrobust.neurons import make_surrogate

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
        model.set_grad_mode(mode)
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


def test_direct_encoder_is_deterministic_poisson_is_not():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    direct = build_model(snn_meta(encoder="direct", thresholds=[0.3] * 5)).eval()
    poisson = build_model(snn_meta(encoder="poisson", thresholds=[0.3] * 5)).eval()
    assert not direct.stochastic and torch.equal(direct(x), direct(x))
    assert poisson.stochastic and not torch.equal(poisson(x), poisson(x))


def test_cupy_backend_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cupy backend may be available")
    with pytest.raises(UserError, match="cupy.*CUDA"):
        build_model(snn_meta(backend="cupy"))


def test_auto_backend_falls_back_on_cpu():
    snn = build_model(snn_meta(backend="auto"))
    assert snn.backend in ("fused", "torch")


def test_checkpoint_of_other_architecture_is_a_clear_error(tmp_path):
    ann = build_model(default_meta("ann", "vgg5", 1, 28, 10, MEAN, STD))
    path = tmp_path / "m.pt"
    save_model(ann, path)
    d = torch.load(path, weights_only=True)
    d["meta"]["arch"] = "vgg9"
    atomic_save(d, path)
    with pytest.raises(FileProblem, match="another architecture"):
        load_model(path)


# ---- training and conversion --------------------------------------------------------------------

def test_trained_ann_learns(trained_ann_path):
    m = json.loads((trained_ann_path.parent / "metrics.json").read_text())
    assert m["clean_acc"] > 0.65, m["clean_acc"]
    assert m["kind"] == "ann" and m["seed"] == 0 and "torch" in m["versions"]
    assert load_model(trained_ann_path).meta["clean_acc"] == m["clean_acc"]


@pytest.mark.parametrize("method", ["threshold", "max"])
def test_conversion_keeps_accuracy(small_data, trained_ann_path, tmp_path, method):
    from spkrobust.convert import run_convert

    ann_acc = load_model(trained_ann_path).meta["clean_acc"]
    cfg = {"model": {"name": "snn_conv", "kind": "convert", "from": "ann", "method": method,
                     "scale": 0.8 if method == "threshold" else 1.0, "T": 32, "calib_T": 32, "neuron": "if",
                     "encoder": "direct"}, "replica": 1, "seed": 0, "device": "cpu"}
    m = run_convert(small_data, cfg, str(trained_ann_path), str(tmp_path / "snn.pt"), str(tmp_path / "m.json"))
    th = m["meta"]["thresholds"]
    assert len(th) == 5 and all(t > 0 for t in th)
    assert m["clean_acc"] > ann_acc - 0.10, (m["clean_acc"], ann_acc)
    snn = load_model(tmp_path / "snn.pt")
    assert snn.meta["neuron"] == "if" and snn.meta["T"] == 32


def test_spike_training_improves_a_short_converted_snn(small_data, trained_ann_path, tmp_path):
    from spkrobust.convert import run_convert
    from spkrobust.train import accuracy, train_snn

    conv = {"model": {"name": "c", "kind": "convert", "T": 4, "calib_T": 4, "neuron": "if", "encoder": "direct"},
            "replica": 1, "seed": 0, "device": "cpu"}
    run_convert(small_data, conv, str(trained_ann_path), str(tmp_path / "c.pt"))
    cfg = {"model": {"name": "s", "kind": "snn", "from": "c", "T": 4, "neuron": "lif", "leak": 0.9,
                     "encoder": "direct", "train": {"epochs": 1, "lr": 3e-4, "batch_size": 32}},
           "replica": 1, "seed": 0, "device": "cpu"}
    before = accuracy(build_snn_from(tmp_path / "c.pt", cfg), small_data.test_x, small_data.test_y)
    m = train_snn(small_data, cfg, tmp_path / "s.pt", tmp_path / "s.json", init=tmp_path / "c.pt")
    assert m["clean_acc"] > before, (before, m["clean_acc"])
    assert m["meta"]["neuron"] == "lif" and m["meta"]["leak"] == 0.9 and m["kind"] == "snn"


def build_snn_from(path, cfg):
    from spkrobust.train import snn_meta_from

    parent = load_model(path)
    snn = build_model(snn_meta_from(cfg["model"], parent.meta))
    snn.load_state_dict(parent.state_dict(), strict=False)
    return snn


@pytest.mark.slow
def test_killed_training_resumes_from_last_epoch_and_matches_uninterrupted(small_data_path, tmp_path):
    """SIGKILL a real training process after its first epoch checkpoint; the rerun resumes and ends
    with exactly the weights of an uninterrupted run."""
    cfg = json.dumps(ann_cfg(epochs=3))
    env = {**os.environ, "OMP_NUM_THREADS": "2"}

    def cmd(d):
        return [sys.executable, "-m", "spkrobust", "train-ann", "--data", str(small_data_path), "--cfg", cfg,
                "--out", str(d / "model.pt"), "--metrics", str(d / "metrics.json")]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "ckpt" / "last.pt"
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.pt").exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0
    out = subprocess.run(cmd(killed), env=env, capture_output=True, text=True, check=True)
    assert "resuming after epoch 1" in out.stdout
    full = tmp_path / "full"
    subprocess.run(cmd(full), env=env, capture_output=True, text=True, check=True)
    a = torch.load(killed / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(full / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_silent_layer_in_threshold_balancing_is_flagged_not_fatal():
    from spkrobust.convert import threshold_balance

    torch.manual_seed(0)
    snn = build_model(snn_meta(neuron="if", encoder="direct", T=2))
    with torch.no_grad():
        snn.layers[3].weight.zero_()  # the second convolution: its spiking layer never gets input
    with pytest.warns(UserWarning, match="spiking layer 1 receives no positive input"):
        th = threshold_balance(snn, torch.rand(8, 1, 28, 28), scale=0.7)
    assert snn.meta["silent_layers"] == [1, 2, 3, 4] and th[0] > 0  # everything after the zeroed conv
