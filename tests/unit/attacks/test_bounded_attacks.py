"""Bounded attacks (issue 20, :mod:`spkrobust.nets.bounded`): the ``grad`` and ``craft`` results of a
Poisson-input SNN with EOT 2 are the same at 1 image x 2 time steps per piece (lengthened to
MIN_ROWS = 16 steps: 2 checkpointed chunks of T = 24) as uncut — adversarial sets, first gradients,
zero_grad_frac, ensemble records; gradients to float rounding (measured: ~1e-7 relative) — and a
stateful estimator's state after a gradient call is the same, updated once (not again when a
checkpointed piece is recomputed)."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import robust as H
from helpers.robust import cli_data_path, cli_models  # noqa: F401  (fixtures of the stage test)
from spkrobust.attacks import registry as A
from spkrobust.attacks.base import begin_run, input_grad
from spkrobust.nets.bounded import effective_cut, set_bounds
from spkrobust.nets.estimators import with_estimator

CUT = (1, 2)  # 1 image, 2 steps per piece (bounded_forward lengthens the chunk to MIN_ROWS rows)
EPS = 8 / 255


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 1, 16, 16, generator=g), torch.tensor([1, 4, 7])


@pytest.fixture(scope="module")
def source():
    from spkrobust.nets.models import build_model, default_meta

    torch.manual_seed(1)  # the project's VGG5 SNN, Poisson input, LIF, T = 24, on 16 x 16 images
    return build_model(default_meta("snn", "vgg5", 1, 16, 10, H.MEAN, H.STD, T=24, neuron="lif", leak=0.9, backend="torch", encoder="poisson", thresholds=[0.2] * 5)).eval()


def _both(model, fn):
    """``fn()`` uncut, then at :data:`CUT` (the model's bounds put back after)."""
    out = []
    for cut in ((None, None), CUT):
        set_bounds(model, *cut)
        try:
            out.append(fn())
        finally:
            set_bounds(model, None, None)
    return out


def _rel(a, b):
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("grad", [None, "assg", "pdsg", "hart", {"mode": "mix", "members": ["bptt", "ste"]}])
def test_input_gradient_does_not_depend_on_the_cut(source, images, grad):
    x, y = images
    model = source if grad is None else with_estimator(source, grad)[0]

    def g():
        torch.manual_seed(3)
        begin_run(model, 2)
        return input_grad(model, x, y, 2), input_grad(model, x.flip(0), y.flip(0), 2)

    (a1, a2), (b1, b2) = _both(source, g)
    assert a1.abs().sum() > 0
    assert _rel(a1, b1) < 1e-5 and _rel(a2, b2) < 1e-5, (_rel(a1, b1), _rel(a2, b2))


def test_fgsm_gradient_sign_is_the_same(source, images):
    x, y = images

    def g():
        torch.manual_seed(7)
        return A.fgsm_gradient(source, x, y, eot_samples=2, batch_size=2)

    a, b = _both(source, g)
    assert (a != 0).float().mean() > 0.5 and torch.equal(a, b)


ATTACKS = [{"type": "fgsm"}, {"type": "pgd", "steps": 2, "alpha": "0.5*eps", "random_start": True},
           {"type": "sapgd", "steps": 3},
           {"type": "ensemble", "stop_early": False,
            "members": [{"type": "fgsm", "grad": "assg"}, {"type": "pgd", "steps": 2, "alpha": "0.5*eps", "grad": "pdsg"}]}]


def _untimed(rec):
    if isinstance(rec, dict):
        return {k: _untimed(v) for k, v in rec.items() if k != "time_s"}
    if isinstance(rec, list):
        return [_untimed(v) for v in rec]
    return rec


@pytest.mark.parametrize("spec", ATTACKS, ids=lambda s: s["type"])
def test_crafted_sets_do_not_depend_on_the_cut(source, images, spec):
    x, y = images
    (a, ia), (b, ib) = _both(source, lambda: A.craft(source, x, y, spec, EPS, eot_samples=2, batch_size=2, seed=5))
    assert float((a - x).abs().max()) > EPS / 2  # the attack moved the images
    if spec["type"] == "sapgd":  # its step uses the gradient's magnitude: float rounding of it can show
        assert float((a - b).abs().max()) < 1e-6
    else:  # sign steps: bit for bit
        assert torch.equal(a, b)
    assert ia["zero_grad_frac"] == ib["zero_grad_frac"] is not None
    assert _untimed(ia.get("ensemble")) == _untimed(ib.get("ensemble"))


def _assg_state(est):
    """The ASSG moments as ``{(layer, t): (M, D)}`` over the whole batch (one entry per micro-batch
    start concatenated in image order)."""
    parts = {}
    for ((layer, rows), t), md in est.state.moments.items():
        parts.setdefault((layer, t), []).append((rows, md))
    return {k: tuple(torch.cat([md[i] for _, md in sorted(v, key=lambda r: r[0])]) for i in (0, 1))
            for k, v in parts.items()}


def test_assg_state_after_a_gradient_call_is_the_same_cut_or_not(source, images):
    x, y = images
    est = with_estimator(source, "assg")[0]

    def run():
        torch.manual_seed(4)
        begin_run(est, 1)
        input_grad(est, x, y, 1)
        input_grad(est, x, y, 1)  # a second step: its moments start from the first's
        return _assg_state(est)

    a, b = _both(source, run)
    assert set(a) == set(b) and len(a) == len(source.spiking_layers()) * 24  # one entry per layer and step
    for k in a:
        for u, v in zip(a[k], b[k]):
            assert u.shape == v.shape and torch.allclose(u, v, rtol=0, atol=1e-6), k
    # the moments moved off their start (M = 1, D = 0): the updates happened, once per pass
    assert max(float((m - 1).abs().max()) for m, _ in a.values()) > 0.05


def test_effective_cut_keeps_the_batch_for_pdsg_and_all_steps_for_time_averaging_estimators(source, images):
    x, y = images
    seen = {}
    for grad in ("bptt", "pdsg", "hart", "bptr", "assg"):
        est = with_estimator(source, grad)[0]
        layer = source.spiking_layers()[0]
        orig = type(layer).forward

        def spy(self, x_seq, _orig=orig, _grad=grad):
            if self is layer and torch.is_grad_enabled() and x_seq.requires_grad:
                seen.setdefault(_grad, set()).add((x_seq.shape[1], x_seq.shape[0]))
            return _orig(self, x_seq)

        type(layer).forward = spy
        try:
            set_bounds(source, *CUT)
            torch.manual_seed(0)
            input_grad(est, x, y, 1)
        finally:
            type(layer).forward = orig
            set_bounds(source, None, None)
    # (images, steps) per call of the first spiking layer: 1 x 16 (MIN_ROWS rows), pdsg 3 x 6, hart/bptr 1 x 24
    assert seen["bptt"] == seen["assg"] == {(1, 16), (1, 8)}
    assert seen["pdsg"] == {(3, 6)} and seen["hart"] == seen["bptr"] == {(1, 24)}
    assert effective_cut(source, 3, *CUT) == (1, 16)


def test_grad_and_craft_stages_write_the_same_files_at_any_cut(cli_data_path, cli_models, tmp_path):  # noqa: F811
    from spkrobust.cli import main

    cfg = {"seed": 0, "device": "cpu", "dataset": "fashion_mnist", "source": "snn", "replica": 1,
           "eval": {"eot_samples": 2, "attack_batch_size": 8}}
    common = ["--data", str(cli_data_path), "--model", str(cli_models["snn"])]
    out = {}
    for tag, cut in (("whole", []), ("cut", ["--micro-batch", "1", "--time-chunk", "2"])):
        g = tmp_path / f"grad-{tag}.pt"
        assert main(["grad", *common, *cut, "--cfg", json.dumps(cfg), "--out", str(g)]) == 0
        a = tmp_path / f"pgd-{tag}.pt"
        assert main(["craft", *common, *cut, "--attack-cfg", json.dumps({"type": "pgd", "steps": 2}), "--eps", "8/255",
                     "--cfg", json.dumps({**cfg, "attack": "pgd"}), "--out", str(a)]) == 0
        out[tag] = torch.load(g, weights_only=True), torch.load(a, weights_only=True)
    (gw, aw), (gc, ac) = out["whole"], out["cut"]
    assert torch.equal(gw["sign"], gc["sign"]) and torch.equal(aw["x_adv"], ac["x_adv"])
    for key in ("zero_grad_frac", "seed", "eot_samples"):
        assert gw["meta"][key] == gc["meta"][key] and aw["meta"][key] == ac["meta"][key], key


def test_a_cut_releases_the_heap_tuning(source):
    # checkpointed pieces of changing sizes fragment a heap that keeps every freed block (measured
    # in spkrobust.nets.memory: 3465 against 2237 MiB for a T = 2000 gradient): a cut releases it for
    # the rest of the process, and building more fused nodes does not tune it again
    from spkrobust.nets import heap

    set_bounds(source, *CUT)
    try:
        assert heap.tune_allocator() is False
    finally:
        set_bounds(source, None, None)
