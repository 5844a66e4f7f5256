"""Every sanity flag on constructed records: where it must trip and where it must not."""
from __future__ import annotations

import pytest

from spkrobust.config.expand import setting_of
from spkrobust.evaluation.checks import FLAGS, run_checks


def rec(attack="pgd", eps=8 / 255, adv=0.3, source="ann", sr=1, target="ann", tr=1, clean=0.9, atype=None,
        std=0.0, repeats=1, stochastic=False, zgf=0.0, n=1000, dataset="fashion_mnist", clean_std=0.0):
    atype = atype or attack
    return {"dataset": dataset, "source": source, "source_replica": sr, "attack": attack,
            "attack_params": {"type": atype}, "attack_type": atype, "eps": eps, "eps_label": str(eps),
            "target": target, "target_replica": tr, "setting": setting_of(source, sr, target, tr), "clean_acc": clean, "clean_acc_std": clean_std,
            "adv_acc": adv, "adv_acc_std": std, "repeats": repeats, "n": n,
            "zero_grad_frac": zgf if atype not in ("noise", "square") else None,
            "stochastic": stochastic, "num_classes": 10}


def only(results, name):
    out = [r for r in results if r["name"] == name]
    assert out, f"no {name} result"
    return out


def status(results, name):
    return {r["status"] for r in only(results, name)}


def healthy():
    """A consistent white-box + black-box + noise evaluation of one ANN (2 replicas)."""
    rs = []
    for sr in (1, 2):
        for atk, accs in (("fgsm", [0.9, 0.5, 0.3, 0.08]), ("pgd", [0.9, 0.4, 0.1, 0.0]),
                          ("noise", [0.9, 0.89, 0.85, 0.5])):
            for e, a in zip([0.0, 4 / 255, 8 / 255, 0.3], accs):
                a = a if sr == 1 or e == 0 else min(0.9, a + 0.2)  # black-box: weaker
                rs.append(rec(atk, e, a, sr=sr))
    return rs


def test_healthy_records_raise_no_flag():
    res = run_checks(healthy(), clean=[{"dataset": "fashion_mnist", "model": "ann", "replica": 1, "stochastic": False,
                                        "clean_acc": 0.9, "clean_acc_std": 0.0, "repeats": 1,
                                        "repeat_check": {"passes": 2, "differs": False, "pred_disagree_frac": 0.0,
                                                         "logit_max_abs_diff": 0.0}}])
    flags = [r for r in res if r["status"] == "flag"]
    assert not flags, flags
    for name in ("eps0_equals_clean", "monotone_in_eps", "iterative_ge_single_step", "large_eps_to_chance",
                 "blackbox_not_stronger_than_whitebox", "noise_weaker_than_attack", "zero_gradient_fraction",
                 "stochastic_target"):
        assert status(res, name) == {"ok"}, name
    for r in res:
        assert set(r) >= {"name", "status", "detail"} and r["status"] in ("ok", "flag", "not_measured")


def test_eps0_must_equal_clean_exactly_for_deterministic_targets():
    assert status(run_checks([rec(eps=0, adv=0.9)]), "eps0_equals_clean") == {"ok"}
    assert status(run_checks([rec(eps=0, adv=0.901)]), "eps0_equals_clean") == {"ok"}  # one image of 1000
    assert status(run_checks([rec(eps=0, adv=0.88)]), "eps0_equals_clean") == {"flag"}
    assert status(run_checks([rec(eps=0.1)]), "eps0_equals_clean") == {"not_measured"}


def test_eps0_allows_repeat_noise_for_stochastic_targets():
    noisy = dict(std=0.01, repeats=3, stochastic=True, clean_std=0.01)
    # t(4 df) * sqrt(2 * 0.01^2 / 3) + 1/1000 = 4.60 * 0.0082 + 0.001 = 0.039
    assert status(run_checks([rec(eps=0, adv=0.87, **noisy)]), "eps0_equals_clean") == {"ok"}
    assert status(run_checks([rec(eps=0, adv=0.85, **noisy)]), "eps0_equals_clean") == {"flag"}


def test_monotone_in_eps():
    ok = [rec(eps=e, adv=a) for e, a in ((0, 0.9), (0.01, 0.5), (0.03, 0.3), (0.1, 0.305))]
    assert status(run_checks(ok), "monotone_in_eps") == {"ok"}  # +0.5pp is within the 1pp slack
    bad = [rec(eps=e, adv=a) for e, a in ((0, 0.9), (0.01, 0.5), (0.03, 0.3), (0.1, 0.6))]
    r = only(run_checks(bad), "monotone_in_eps")[0]
    assert r["status"] == "flag" and "60.00%" in r["detail"]
    # a rise compared with any smaller eps, not only the neighbour
    bad2 = [rec(eps=e, adv=a) for e, a in ((0.01, 0.2), (0.03, 0.25), (0.1, 0.26))]
    assert status(run_checks(bad2), "monotone_in_eps") == {"flag"}


def test_iterative_ge_single_step_white_box_only():
    ok = [rec("fgsm", 0.03, 0.4), rec("pgd", 0.03, 0.2)]
    assert status(run_checks(ok), "iterative_ge_single_step") == {"ok"}
    bad = [rec("fgsm", 0.03, 0.2), rec("pgd", 0.03, 0.4)]
    assert status(run_checks(bad), "iterative_ge_single_step") == {"flag"}
    # in transfer an iterative attack may legitimately be weaker: not checked there
    transfer = [rec("fgsm", 0.03, 0.2, source="snn"), rec("pgd", 0.03, 0.4, source="snn")]
    assert not [r for r in run_checks(transfer) if r["name"] == "iterative_ge_single_step" and r["status"] == "flag"]
    assert status(run_checks([rec("pgd", 0.03, 0.4)]), "iterative_ge_single_step") == {"not_measured"}


def test_large_eps_to_chance():
    assert status(run_checks([rec("pgd", 0.3, 0.05)]), "large_eps_to_chance") == {"ok"}
    assert status(run_checks([rec("pgd", 0.3, 0.6)]), "large_eps_to_chance") == {"flag"}
    r = only(run_checks([rec("pgd", 8 / 255, 0.6)]), "large_eps_to_chance")[0]
    assert r["status"] == "not_measured" and "0.25" in r["detail"]
    assert status(run_checks([rec("fgsm", 0.3, 0.6)]), "large_eps_to_chance") == {"not_measured"}
    # the strongest iterative attack at the largest eps counts
    assert status(run_checks([rec("pgd", 0.3, 0.6), rec("apgd", 0.3, 0.02, atype="apgd")]),
                  "large_eps_to_chance") == {"ok"}


def test_blackbox_not_stronger_than_whitebox():
    ok = [rec(adv=0.2, sr=1), rec(adv=0.5, sr=2)]
    assert status(run_checks(ok), "blackbox_not_stronger_than_whitebox") == {"ok"}
    bad = [rec(adv=0.5, sr=1), rec(adv=0.2, sr=2)]
    r = only(run_checks(bad), "blackbox_not_stronger_than_whitebox")[0]
    assert r["status"] == "flag" and "ann r2" in r["detail"]
    assert status(run_checks([rec(adv=0.2)]), "blackbox_not_stronger_than_whitebox") == {"not_measured"}


def test_noise_weaker_than_attack():
    ok = [rec("pgd", 0.03, 0.2), rec("noise", 0.03, 0.85)]
    assert status(run_checks(ok), "noise_weaker_than_attack") == {"ok"}
    bad = [rec("pgd", 0.03, 0.8), rec("noise", 0.03, 0.5)]
    assert status(run_checks(bad), "noise_weaker_than_attack") == {"flag"}
    assert status(run_checks([rec("pgd", 0.03, 0.2)]), "noise_weaker_than_attack") == {"not_measured"}


def test_zero_gradient_fraction():
    assert status(run_checks([rec(zgf=0.01)]), "zero_gradient_fraction") == {"ok"}
    r = only(run_checks([rec(zgf=0.01), rec(eps=0.1, zgf=0.4)]), "zero_gradient_fraction")[0]
    assert r["status"] == "flag" and "40.00%" in r["detail"]
    assert status(run_checks([rec(zgf=None)]), "zero_gradient_fraction") == {"not_measured"}


def _clean(stochastic, differs, repeats=3, std=0.01):
    return {"dataset": "fashion_mnist", "model": "snn", "replica": 1, "stochastic": stochastic,
            "clean_acc": 0.8, "clean_acc_std": std, "repeats": repeats,
            "repeat_check": {"passes": 2, "differs": differs, "pred_disagree_frac": 0.02 if differs else 0.0,
                             "logit_max_abs_diff": 0.3 if differs else 0.0}}


@pytest.mark.parametrize("stochastic,differs,repeats,expected", [
    (True, True, 3, "ok"), (False, False, 1, "ok"),
    (False, True, 1, "flag"),   # undeclared randomness
    (True, False, 3, "flag"),   # declared random, but identical passes
    (True, True, 1, "flag"),    # random but no spread reported
])
def test_stochastic_target(stochastic, differs, repeats, expected):
    r = only(run_checks([rec()], clean=[_clean(stochastic, differs, repeats)]), "stochastic_target")[0]
    assert r["status"] == expected
    assert "predictions differ" in r["detail"]
    assert status(run_checks([rec()]), "stochastic_target") == {"not_measured"}


def test_string_eps_and_empty_input():
    assert status(run_checks([rec(eps="0", adv=0.9), rec(eps="8/255", adv=0.3)]), "eps0_equals_clean") == {"ok"}
    res = run_checks([])
    assert res and all(r["status"] == "not_measured" for r in res)


def test_every_check_has_its_raised_if_and_what_to_do_in_checks_md():
    from spkrobust.report.tables import checks_md

    results = run_checks(healthy(), clean=[_clean(False, False, 1)]) + run_checks([])
    names = {r["name"] for r in results}
    assert names <= set(FLAGS), names - set(FLAGS)
    # these need an ensemble attack (tests/unit/attacks/test_ensemble.py)
    assert set(FLAGS) - names <= {"ensemble_drop", "ensemble_not_weaker"}
    md = checks_md(healthy(), [_clean(False, False, 1)], [])
    explained = md.split("## What each flag means")[1]
    for n in names - {"records"}:
        assert f"| {n} | {FLAGS[n].level} | {FLAGS[n].raised_if} |" in explained
