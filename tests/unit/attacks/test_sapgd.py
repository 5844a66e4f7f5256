"""SA-PGD (spkrobust.attacks.sapgd): the reference's update rule checked by hand on a linear model, its
step-size schedule, the eps-ball, seeds, estimators and EOT on SNN sources, and its strength against PGD."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers import robust as H
from spkrobust.attacks import registry as A
from spkrobust.attacks import sapgd as S


@pytest.fixture(scope="session")
def ann(small_data):
    return H.tiny_ann(small_data)


def test_halving_schedule_is_the_references():
    # N = 100: k = 22, then 22-3 = 19, 16, 13, 10, 7, then the floor 6 (iterations counted from 1)
    assert S.halving_iterations(100) == [21, 40, 56, 69, 79, 86, 92, 98]
    assert S.halving_iterations(50) == [10, 20, 29, 37, 44]  # k = 11, 10, 9, 8, 7 (floor 3 not reached)
    assert S.halving_iterations(10) == list(range(1, 10))  # k = 2, then the floor 1
    assert S.halving_iterations(1) == [0]


def _softmax_ce_grad(W, b, x, y):
    """d/dx of sum_i CE(W x_i + b, y_i) for a linear model, in float64 numpy."""
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p @ W


def test_two_steps_on_a_linear_model_match_a_hand_computation():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    with torch.no_grad():
        lin.weight.mul_(3.0)  # logits that move within the ball, so the gradient's direction changes
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(5, 1, 2, 2, dtype=torch.float64) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 0, 1])
    eps = 0.4  # large: the [0, 1] clip is active too
    W, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    X = x.reshape(5, 4).numpy()
    # the reference's start, from the same generator: x + eps * t / max|t| with t ~ U(-1, 1)
    gen = torch.Generator().manual_seed(7)
    t = (2 * torch.rand(x.shape, generator=gen, dtype=torch.float64) - 1).reshape(5, 4).numpy()
    x0 = np.clip(X + eps * t / np.abs(t).max(1, keepdims=True), 0, 1)
    # N = 2: k = max(int(0.44), 1) = 1, so eta is eps at step 1 and eps/2 at step 2
    g0 = _softmax_ce_grad(W, b, x0, y.numpy())
    m = g0 / np.abs(g0).mean(1, keepdims=True)
    v = g0 ** 2 / (g0 ** 2).mean(1, keepdims=True)
    x1 = np.clip(np.clip(x0 + np.clip(eps * m / (np.sqrt(v) + 1e-12), -eps, eps), X - eps, X + eps), 0, 1)
    g1 = _softmax_ce_grad(W, b, x1, y.numpy())
    m = 0.5 * m + g1 / np.abs(g1).mean(1, keepdims=True)
    v = 0.8 * v + g1 ** 2 / (g1 ** 2).mean(1, keepdims=True)
    eta = eps / 2
    step2 = np.clip(eta * m / (np.sqrt(v) + 1e-12), -eta, eta)
    x2 = np.clip(np.clip(x1 + step2, X - eps, X + eps), 0, 1)
    assert (np.abs(step2) < eta - 1e-9).any()  # the second step is not a plain sign step: the moments matter

    trace = []
    S.single_run(model, x, y, eps, steps=2, generator=torch.Generator().manual_seed(7), trace=trace)
    got = [tr[0].reshape(5, 4).numpy() for tr in trace]
    np.testing.assert_allclose(got[0], x0, atol=1e-12)
    np.testing.assert_allclose(got[1], x1, atol=1e-12)
    np.testing.assert_allclose(got[2], x2, atol=1e-12)


def test_update_of_a_zero_gradient_is_zero_not_nan():
    g = torch.zeros(2, 1, 3, 3)
    g[1, 0, 0, 0] = 2.0
    m, v, d = S.sapgd_update(None, None, g, 0.1)
    assert torch.isfinite(d).all() and float(d[0].abs().max()) == 0.0
    assert float(d[1, 0, 0, 0]) == pytest.approx(0.1)


@pytest.mark.parametrize("eps", [0.0, 4 / 255, 0.3])
def test_stays_in_the_ball_and_is_reproducible(ann, small_data, eps):
    x, y = H.test_images(small_data, 24)
    spec = {"type": "sapgd", "steps": 5}
    a, info = A.craft(ann, x, y, spec, eps, seed=3, batch_size=12)
    A.verify_adv(x, a, eps)
    assert float((a - x).abs().max()) <= eps + 1e-6 and float(a.min()) >= 0 and float(a.max()) <= 1
    if eps == 0.0:
        assert torch.equal(a, x)
        return
    b, _ = A.craft(ann, x, y, spec, eps, seed=3, batch_size=12)
    c, _ = A.craft(ann, x, y, spec, eps, seed=4, batch_size=12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert info["zero_grad_frac"] == 0.0 and info["attack_params"]["loss"] == "ce"


def _ce(model, x, y):
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_beats_or_equals_pgd_on_a_trained_model(ann, small_data):
    x, y = H.test_images(small_data, 96)
    eps = 2 / 255  # small enough that neither attack breaks every image
    pgd, _ = A.craft(ann, x, y, {"type": "pgd", "steps": 20, "alpha": "0.25*eps"}, eps, seed=0, batch_size=96)
    sa, _ = A.craft(ann, x, y, {"type": "sapgd", "steps": 20}, eps, seed=0, batch_size=96)
    acc_clean, acc_pgd, acc_sa = _acc(ann, x, y), _acc(ann, pgd, y), _acc(ann, sa, y)
    assert acc_pgd < acc_clean - 0.05 and 0.0 < acc_sa
    assert acc_sa <= acc_pgd
    # the highest loss SA-PGD reaches is at least PGD's (per batch mean of the per-image best)
    trace = []
    S.single_run(ann, x, y, eps, steps=20, generator=torch.Generator().manual_seed(0), trace=trace)
    best = torch.stack([tr[1] for tr in trace]).max(0).values.mean()
    assert float(best) >= _ce(ann, pgd, y) - 1e-6


def test_restarts_attack_only_the_survivors(ann, small_data):
    x, y = H.test_images(small_data, 32)
    one, _ = A.craft(ann, x, y, {"type": "sapgd", "steps": 4}, 2 / 255, seed=1, batch_size=32)
    three, _ = A.craft(ann, x, y, {"type": "sapgd", "steps": 4, "n_restarts": 3}, 2 / 255, seed=1, batch_size=32)
    fooled_one = ann(one).argmax(1) != y
    assert torch.equal(three[fooled_one], one[fooled_one])  # the first restart's fooling iterate is kept
    assert _acc(ann, three, y) <= _acc(ann, one, y)


@pytest.mark.parametrize("grad", [None, {"mode": "bptt", "surrogate": "atan", "width": 0.5}, "bptr", "hart"])
def test_runs_with_every_estimator_and_eot_on_a_poisson_snn(small_data, grad):
    m = H.snn()
    x, y = H.test_images(small_data, 4)
    spec = {"type": "sapgd", "steps": 2, "eot_samples": 2, **({"grad": grad} if grad else {})}
    a, info = A.craft(m, x, y, spec, 8 / 255, eot_samples=1, seed=2)
    A.verify_adv(x, a, 8 / 255)
    assert info["eot_samples"] == 2 and info["zero_grad_frac"] < 0.5
    assert float((a - x).abs().max()) > 0


def test_eot_averages_gradients_over_independent_draws():
    m = H.snn()
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    calls = []
    orig = m.forward

    def counted(inp):
        calls.append(bool(inp.requires_grad))
        return orig(inp)

    m.forward = counted
    torch.manual_seed(0)
    S.sapgd(m, x, y, 8 / 255, steps=3, eot_samples=4, seed=0)
    # 3 gradients (start, steps 1 and 2) of 4 draws each, then the final iterate's 4 forward passes
    assert calls == [True] * 12 + [False] * 4
