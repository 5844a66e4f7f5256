"""The adaptive attacks on a small real SNN: the ensemble with ASSG/PDSG/mix members is never weaker than any
member on the same images and eps (per image), and a list of HART's γ / ASSG's a is tried per member in an
ensemble and searched per source in a single attack (spkrobust.attacks.search)."""
from __future__ import annotations

import pytest
import helpers.robust as H
import torch

from spkrobust.attacks import registry as A
from spkrobust.attacks.ensemble import decode_record, source_margin
from spkrobust.attacks.search import SEARCH_IMAGES

EPS = 0.1
MEMBERS = [{"type": "pgd", "steps": 3, "alpha": "0.25*eps"},
           {"type": "sapgd", "steps": 4, "grad": {"mode": "assg"}},
           {"type": "apgd", "steps": 3, "loss": "dlr", "grad": "pdsg"},
           {"type": "fgsm", "grad": {"mode": "mix", "members": ["assg", {"mode": "hart", "gamma": 0.5}],
                                     "combine": "maxloss"}},
           {"type": "pgd", "steps": 2, "alpha": "0.5*eps", "grad": {"mode": "hart", "gamma": [0.5, 2.0]}},
           {"type": "fgsm", "name": "f", "grad": {"mode": "assg", "shape": "gaussian", "a": [0.3, 0.45]}}]


@pytest.fixture(scope="module")
def snn():
    return H.snn(seed=3, T=2, encoder="direct", thresholds=[0.2] * 5)


def _data(n=12):
    torch.manual_seed(0)
    return torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))


def test_ensemble_is_never_weaker_than_any_member(snn):
    x, y = _data()
    with torch.no_grad():
        y = snn(x).argmax(1)  # every image starts correctly classified
    seed = 4
    x_adv, info = A.craft(snn, x, y, {"type": "ensemble", "members": MEMBERS, "stop_early": False}, EPS, seed=seed)
    rec = decode_record(info["ensemble"])
    assert rec["members"] == ["pgd", "sapgd-assg-atan-a0.425", "apgd-dlr-pdsg",
                              "fgsm-mix-maxloss[assg-atan-a0.425+hart-g0.5]", "pgd-hart-g0.5", "pgd-hart-g2", "f-a0.3", "f-a0.45"]
    ens = source_margin(snn, x_adv, y, 1, 64, "cpu")
    members = info["attack_params"]["members"]
    for i, m in enumerate(members):
        spec = {k: v for k, v in m.items() if k != "name"}
        xm, _ = A.craft(snn, x, y, spec, EPS, seed=A.derive_seed(seed, "member", i))
        mm = source_margin(snn, xm, y, 1, 64, "cpu")
        assert (ens <= mm + 1e-6).all(), f"the ensemble is weaker than member {m['name']} on some image"
        assert ((mm < 0).numpy() == rec["broken"][i]).all()
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert (ens < 0).any(), "nothing broken at eps 0.1: the test says nothing"


def test_gamma_search_picks_the_lowest_accuracy_and_records_it(snn):
    x, y = _data(SEARCH_IMAGES + 4)
    with torch.no_grad():
        y = snn(x).argmax(1)
    spec = {"type": "pgd", "steps": 2, "alpha": "0.5*eps", "grad": {"mode": "hart", "gamma": [0.25, 1.0, 4.0]}}
    x_adv, info = A.craft(snn, x, y, spec, EPS, seed=2)
    rec = info["grad_search"]
    assert rec["key"] == "gamma" and rec["images"] == SEARCH_IMAGES and set(rec["adv_acc"]) == {"0.25", "1", "4"}
    assert rec["adv_acc"][f"{rec['value']:g}"] == min(rec["adv_acc"].values())
    assert info["grad"] == f"hart-g{rec['value']:g}"
    # the attack on all images is the one with the chosen γ
    one = {**spec, "grad": {"mode": "hart", "gamma": rec["value"]}}
    x_one, _ = A.craft(snn, x, y, one, EPS, seed=2)
    assert torch.equal(x_adv, x_one)


def test_losstrace_records_one_loss_per_gradient_step(snn):
    from spkrobust.tools.losstrace import DEFAULT_ATTACKS, trace

    x, y = _data(4)
    for name, spec in DEFAULT_ATTACKS.items():
        t = trace(snn, x, y, spec, EPS, steps=3, eot=1)
        assert len(t["loss"]) == 3 and all(v > 0 for v in t["loss"]), name  # pgd: 3 iterates; sapgd: start + 2
        assert 0.0 <= t["acc"] <= 1.0
