"""Small real components for the attack/evaluation tests (imported by test_attacks/evaluate/checks).

* :func:`tiny_ann` — a small conv net (normalisation inside, pixels in [0, 1]) trained for a few
  hundred steps on real Fashion-MNIST; ~80 % test accuracy in a few seconds on 2 cores;
* :func:`snn` — the project's VGG5 SNN (``spkrobust.nets.models.build_model``), Poisson input;
* :class:`Counting` — wraps a model and counts gradient-carrying forward passes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = [0.286], [0.353]


class TinyANN(nn.Module):
    stochastic = False

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)
        self.meta = {"kind": "ann", "arch": "tiny", "num_classes": 10, "name": "tiny", "replica": 1}

    def forward(self, x):
        x = (x - MEAN[0]) / STD[0]
        x = F.avg_pool2d(F.relu(self.c1(x)), 2)
        x = F.avg_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


def tiny_ann(data, steps: int = 150, seed: int = 0) -> TinyANN:
    torch.manual_seed(seed)
    m = TinyANN()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    x, y = data.train_x, data.train_y
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = F.cross_entropy(m(x[idx].float() / 255), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def snn_meta(**kw):
    from spkrobust.nets.models import default_meta

    base = dict(T=4, neuron="lif", leak=0.9, backend="torch", encoder="poisson", thresholds=[0.3] * 5)
    base.update(kw)
    return default_meta("snn", "vgg5", 1, 28, 10, MEAN, STD, **base)


def snn(seed: int = 0, **kw):
    from spkrobust.nets.models import build_model

    torch.manual_seed(seed)
    return build_model(snn_meta(**kw)).eval()


class Counting(nn.Module):
    """Counts forward passes whose input requires grad (= gradient computations)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.meta = getattr(model, "meta", {})
        self.grad_calls = 0
        self.calls = 0

    @property
    def stochastic(self):
        return bool(getattr(self.model, "stochastic", False))

    def forward(self, x):
        self.calls += 1
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_calls += 1
        return self.model(x)


def test_images(data, n: int):
    return data.test_x[:n].float() / 255, data.test_y[:n].clone()


# ---- fixtures shared by test_attacks/test_evaluate (import them into the test module) ----------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cli_data_path(tmp_path_factory):
    """Real Fashion-MNIST prepared file with 16 test images (small: CLI stages stay fast)."""
    from spkrobust.data.datasets import prepare
    from spkrobust.io import atomic_save

    path = tmp_path_factory.mktemp("clidata") / "data.pt"
    atomic_save(prepare("fashion_mnist", "data", train_size=256, test_size=16, calib_size=32, seed=0), path)
    return path


@pytest.fixture(scope="session")
def cli_models(tmp_path_factory):
    """Saved project models: a VGG5 ANN, a Poisson SNN (2 replicas) and a direct-input SNN."""
    from spkrobust.nets.models import build_model, default_meta, save_model

    d = tmp_path_factory.mktemp("climodels")
    out = {}
    torch.manual_seed(0)
    ann = build_model(default_meta("ann", "vgg5", 1, 28, 10, MEAN, STD)).eval()
    out["ann"] = d / "ann.pt"
    save_model(ann, out["ann"], name="ann", replica=1, dataset="fashion_mnist", seed=0)
    for name, rep, kw in (("snn", 1, {}), ("snn", 2, {}), ("snn_direct", 1, {"encoder": "direct"})):
        m = snn(seed=rep, **kw)
        key = name if rep == 1 else f"{name}_r{rep}"
        out[key] = d / f"{key}.pt"
        save_model(m, out[key], name=name, replica=rep, dataset="fashion_mnist", seed=rep)
    return out
