"""Attacks: eps-ball/[0, 1] guarantee for every attack, the one-gradient FGSM sweep, EOT, gradient
flow through the project's SNNs, zero-gradient bookkeeping, torchattacks equivalence, CLI files."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchattacks

from helpers import robust as H
from helpers.robust import cli_data_path, cli_models  # noqa: F401  (fixtures)
from spkrobust.attacks import registry as A
from spkrobust.config import vocab
from spkrobust.config.expand import parse_eps
from spkrobust.errors import UserError
from spkrobust.config.vocab import ADV_FORMAT, GRAD_FORMAT


@pytest.fixture(scope="session")
def ann(small_data):
    return H.tiny_ann(small_data)


@pytest.fixture(scope="session")
def batch(small_data):
    return H.test_images(small_data, 48)


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


FAST = {"pgd": {"steps": 3}, "eotpgd": {"steps": 2, "eot_samples": 2}, "apgd": {"steps": 3},
        "apgdt": {"steps": 3, "target_classes": 2}, "sapgd": {"steps": 3}, "square": {"n_queries": 30},
        "ensemble": {"members": [{"type": "fgsm"}, {"type": "apgd", "steps": 3, "loss": "dlr"}]}}


def test_tiny_ann_is_really_trained(ann, small_data):
    x, y = H.test_images(small_data, 300)
    assert _acc(ann, x, y) > 0.65


@pytest.mark.parametrize("atype", vocab.ATTACK_TYPES)
@pytest.mark.parametrize("eps", [0.0, 4 / 255, 0.3])
def test_every_attack_stays_in_eps_ball_and_unit_range(ann, batch, atype, eps):
    x, y = batch
    x_adv, info = A.craft(ann, x, y, {"type": atype, **FAST.get(atype, {})}, eps, seed=1, batch_size=32)
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if eps == 0.0:
        assert torch.equal(x_adv, x)
    if atype in A.GRADIENT_TYPES or atype == "ensemble":  # an ensemble reports its members' worst
        assert info["zero_grad_frac"] == 0.0 and info["eot_samples"] == 1  # deterministic source: EOT off
    else:
        assert info["zero_grad_frac"] is None
    if eps == 0.3 and atype in ("fgsm", "rfgsm", "apgd", "apgdt", "sapgd", "ensemble"):
        assert _acc(ann, x_adv, y) < 0.2, "a working attack destroys the tiny ANN at eps 0.3"


@pytest.mark.parametrize("atype", ["fgsm", "pgd", "eotpgd", "noise"])
def test_stochastic_snn_attacks_stay_in_eps_ball(batch, atype):
    m = H.snn()
    x, y = batch[0][:4], batch[1][:4]
    spec = {"type": atype, **FAST.get(atype, {})}
    if atype in ("pgd", "eotpgd"):
        spec["steps"] = 1
    x_adv, info = A.craft(m, x, y, spec, 8 / 255, eot_samples=2, seed=3)
    A.verify_adv(x, x_adv, 8 / 255)
    if atype in A.GRADIENT_TYPES:
        assert info["eot_samples"] == 2 and info["zero_grad_frac"] < 0.05


def test_verify_rejects_every_violation():
    x = torch.full((2, 1, 4, 4), 0.5)
    A.verify_adv(x, x + 0.1, 0.1)
    with pytest.raises(A.AdversarialSetError, match="eps-ball"):
        A.verify_adv(x, x + 0.1 + 1e-4, 0.1)
    with pytest.raises(A.AdversarialSetError, match=r"\[0, 1\]"):
        A.verify_adv(torch.ones_like(x), torch.ones_like(x) + 0.05, 0.1)
    with pytest.raises(A.AdversarialSetError, match="NaN"):
        A.verify_adv(x, torch.full_like(x, float("nan")), 0.1)


def test_fgsm_sweep_reuses_one_gradient_and_equals_per_eps_fgsm(ann, batch):
    x, y = batch
    counting = H.Counting(ann)
    sign = A.fgsm_gradient(counting, x, y, batch_size=len(x))
    assert sign.dtype == torch.int8 and counting.grad_calls == 1
    eps_list = [0.0, 2 / 255, 8 / 255, 0.1, 0.3]
    for eps in eps_list:
        swept = A.fgsm_from_grad(x, sign, eps)
        per_eps, info = A.craft(ann, x, y, {"type": "fgsm"}, eps, batch_size=len(x))
        via_file, _ = A.craft(ann, x, y, {"type": "fgsm"}, eps, grad=sign)
        ref = torchattacks.FGSM(ann, eps=eps)(x, y)
        assert torch.equal(swept, per_eps) and torch.equal(swept, via_file) and torch.equal(swept, ref), eps
    assert counting.grad_calls == 1  # the sweep itself computed no further gradient


def test_pgd_and_rfgsm_equal_torchattacks_given_the_seed(ann, batch):
    x, y = batch
    eps = 8 / 255
    torch.manual_seed(5)
    ref = torchattacks.PGD(ann, eps=eps, alpha=2 / 255, steps=3, random_start=True)(x, y)
    mine, _ = A.craft(ann, x, y, {"type": "pgd", "steps": 3, "alpha": "2/255"}, eps, seed=5, batch_size=len(x))
    assert torch.equal(ref, mine)
    torch.manual_seed(6)
    ref = torchattacks.RFGSM(ann, eps=eps, alpha=eps / 2, steps=1)(x, y)
    mine, _ = A.craft(ann, x, y, {"type": "rfgsm"}, eps, seed=6, batch_size=len(x))
    assert torch.allclose(ref, mine, atol=1e-7)


def test_crafting_is_deterministic_given_the_seed():
    m = H.snn()
    x, y = torch.rand(2, 1, 28, 28), torch.arange(2)
    spec = {"type": "pgd", "steps": 1, "alpha": "0.5*eps"}
    a, _ = A.craft(m, x, y, spec, 8 / 255, seed=11, eot_samples=2)
    b, _ = A.craft(m, x, y, spec, 8 / 255, seed=11, eot_samples=2)
    c, _ = A.craft(m, x, y, spec, 8 / 255, seed=12, eot_samples=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- SNN gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("grad_mode", ["bptt", "rate"])
def test_snn_attack_path_really_has_gradients_in_eval_mode(backend, grad_mode):
    """Fails if an SNN is ever attacked without input gradients (SpikingJelly's eval() trap)."""
    m = H.snn(backend=backend)
    A.set_grad_mode(m, grad_mode)
    assert not m.training and m.stochastic
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    g = A.input_grad(m, x, y)
    assert g.abs().sum() > 0
    assert float(A.zero_grad_mask(g).float().mean()) < 0.05
    x_adv, info = A.craft(m, x, y, {"type": "pgd", "steps": 2, "alpha": "0.5*eps"}, 8 / 255, seed=0)
    assert info["zero_grad_frac"] < 0.05
    assert float((x_adv - x).abs().max()) > 4 / 255  # the steps moved the input
    assert not m.training  # attacks ran the source in eval() mode


def test_a_source_without_input_gradient_is_an_error():
    from spikingjelly.activation_based import neuron

    class Stock(nn.Module):  # stock SpikingJelly neuron in eval(): no surrogate, no gradient
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 10)
            self.node = neuron.IFNode(v_threshold=0.1)

        def forward(self, x):
            return self.node(self.fc(x.flatten(1)))

    m = Stock().eval()
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    with pytest.raises(A.NoGradientError):
        A.fgsm_gradient(m, x, y)
    with pytest.raises(A.NoGradientError):
        A.craft(m, x, y, {"type": "pgd", "steps": 1}, 0.1)


class HalfDead(nn.Module):
    """Input gradient exactly zero for images whose pixels are all < 0.5 (a ReLU that never opens)."""

    stochastic = False

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 10).view(1, 10))
        self.meta = {"kind": "ann"}

    def forward(self, x):
        h = torch.relu(x.flatten(1) - 0.5).sum(1, keepdim=True)
        return h * self.w


@pytest.mark.parametrize("atype", ["fgsm", "rfgsm", "pgd", "eotpgd", "apgd"])
def test_zero_grad_frac_counts_inputs_with_all_zero_gradient(atype):
    x = torch.cat([torch.full((4, 1, 4, 4), 0.1), torch.full((4, 1, 4, 4), 0.9)])
    y = torch.zeros(8, dtype=torch.long)
    _, info = A.craft(HalfDead(), x, y, {"type": atype, **FAST.get(atype, {})}, 0.02, seed=0)
    assert info["zero_grad_frac"] == pytest.approx(0.5)
    sign = A.fgsm_gradient(HalfDead(), x, y)
    assert float(A.zero_grad_mask(sign).float().mean()) == pytest.approx(0.5)


# ---- EOT ----------------------------------------------------------------------------------------

def test_eot_sums_gradients_over_independent_poisson_draws():
    m = H.snn()
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    torch.manual_seed(0)
    g3 = A.input_grad(m, x, y, eot_samples=3)
    torch.manual_seed(0)
    singles = [A.input_grad(m, x, y, 1) for _ in range(3)]
    assert torch.allclose(g3, sum(singles), atol=1e-6)
    assert not torch.equal(singles[0], singles[1])  # each draw differs: the average is informative


def test_eot_makes_the_gradient_sign_more_stable():
    m = H.snn()
    x, y = torch.rand(3, 1, 28, 28), torch.arange(3)
    torch.manual_seed(1)

    def agree(k):
        a, b = A.input_grad(m, x, y, k).sign(), A.input_grad(m, x, y, k).sign()
        return float((a == b).float().mean())

    assert agree(4) > agree(1)


def test_eot_counts_forward_passes_and_is_off_for_deterministic_sources(ann, batch):
    snn = H.Counting(H.snn())
    x, y = torch.rand(3, 1, 28, 28), torch.arange(3)
    _, info = A.craft(snn, x, y, {"type": "eotpgd", "steps": 2, "eot_samples": 3}, 8 / 255)
    assert info["eot_samples"] == 3 and snn.grad_calls == 2 * 3
    snn.grad_calls = 0
    A.fgsm_gradient(snn, x, y, eot_samples=4)
    assert snn.grad_calls == 4
    det = H.Counting(ann)
    _, info = A.craft(det, *batch, {"type": "eotpgd", "steps": 2, "eot_samples": 3}, 8 / 255, batch_size=48)
    assert info["eot_samples"] == 1 and det.grad_calls == 2


# ---- config -------------------------------------------------------------------------------------

def test_attack_specs_are_checked():
    assert A.resolve_attack({"type": "pgd", "alpha": "2/255"}, 0.1)[1]["alpha"] == pytest.approx(2 / 255)
    assert A.resolve_attack({"type": "pgd", "alpha": "0.25*eps"}, 0.2)[1]["alpha"] == pytest.approx(0.05)
    assert A.resolve_attack({"type": "rfgsm"}, 0.1)[1]["alpha"] == pytest.approx(0.05)
    assert A.resolve_attack({"type": "eotpgd"}, 0.1, cfg_eot=1)[1]["eot_samples"] == A.EOTPGD_MIN_SAMPLES
    assert parse_eps("8_255") == pytest.approx(8 / 255) and parse_eps("0.1") == 0.1
    with pytest.raises(UserError, match="attack.type: 'cw' is not allowed"):
        A.resolve_attack({"type": "cw"}, 0.1)
    with pytest.raises(UserError, match="stepz"):
        A.resolve_attack({"type": "pgd", "stepz": 3}, 0.1)
    with pytest.raises(UserError):
        A.resolve_attack({"type": "pgd", "steps": 0}, 0.1)
    with pytest.raises(UserError):
        parse_eps("-1/255")


# ---- CLI ----------------------------------------------------------------------------------------

def test_grad_and_craft_stages_write_verified_weights_only_files(cli_data_path, cli_models, tmp_path):
    from spkrobust.cli import main

    src = cli_models["snn"]
    cfg = json.dumps({"seed": 0, "device": "cpu", "dataset": "fashion_mnist", "source": "snn", "replica": 1,
                      "eval": {"eot_samples": 2, "attack_batch_size": 64}})
    grad = tmp_path / "grad.pt"
    assert main(["grad", "--data", str(cli_data_path), "--model", str(src), "--cfg", cfg, "--out", str(grad)]) == 0
    g = torch.load(grad, weights_only=True)
    assert g["format"] == GRAD_FORMAT and g["sign"].dtype == torch.int8 and g["meta"]["eot_samples"] == 2
    assert g["meta"]["zero_grad_frac"] < 0.05
    for attack, extra in (({"type": "fgsm"}, ["--grad", str(grad)]), ({"type": "pgd", "steps": 2}, [])):
        out = tmp_path / f"{attack['type']}.pt"
        rc = main(["craft", "--data", str(cli_data_path), "--model", str(src), *extra, "--attack-cfg",
                   json.dumps(attack), "--eps", "8/255", "--cfg",
                   json.dumps({**json.loads(cfg), "attack": attack["type"]}), "--out", str(out)])
        assert rc == 0
        d = torch.load(out, weights_only=True)
        assert d["format"] == ADV_FORMAT and d["x_adv"].dtype == torch.float32
        m = d["meta"]
        for key in ("source", "source_replica", "attack", "attack_params", "eps", "eps_label", "seed",
                    "zero_grad_frac", "time_s", "grad_mode", "eot_samples", "dataset"):
            assert key in m, key
        assert m["eps_label"] == "8_255" and m["attack"] == attack["type"] and m["eot_samples"] == 2
        assert m["zero_grad_frac"] < 0.05
        from spkrobust.data.datasets import load_prepared

        x = load_prepared(cli_data_path).test_x.float() / 255
        A.verify_adv(x, d["x_adv"], 8 / 255)
    # the fgsm set made from the grad file is exactly fgsm_from_grad of the stored sign
    d = torch.load(tmp_path / "fgsm.pt", weights_only=True)
    assert torch.equal(d["x_adv"], A.fgsm_from_grad(x, g["sign"], 8 / 255))


def test_craft_rejects_bad_input_with_one_line_errors(cli_data_path, cli_models, tmp_path, capsys):
    from spkrobust.cli import main

    base = ["craft", "--data", str(cli_data_path), "--model", str(cli_models["ann"]), "--eps", "8/255",
            "--cfg", json.dumps({"seed": 0, "device": "cpu"}), "--out", str(tmp_path / "a.pt")]
    assert main(base + ["--attack-cfg", json.dumps({"type": "cw"})]) == 2
    assert main(base + ["--attack-cfg", "{not json"]) == 2
    err = capsys.readouterr().err
    assert "'cw' is not allowed" in err and "not valid JSON" in err
    assert not (tmp_path / "a.pt").exists()
