"""spkrobust.report.headline and .description on constructed per-image outcomes with known answers:
the white-box drop of an SNN against the ANN, its verdict over replicas, the advantage an ensemble
removes, and the report's first page (rst) with the jobs' numerical environment."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_claims import N, clean, mask, model_rows, rec

from spkrobust import provenance
from spkrobust.report import description as D, headline as H
from spkrobust.report.compare import World


def whitebox(adv_by_attack: dict, clean_snn, clean_ann, replicas=(1,)):
    """White-box records (each target by itself) per attack: {attack: (snn correct, ann correct)}."""
    recs, cl = [], []
    for r in replicas:
        for atk, (s, a) in adv_by_attack.items():
            recs += [rec("snn", r, "snn", r, s, attack=atk), rec("ann", r, "ann", r, a, attack=atk)]
        cl += [clean("snn", r, clean_snn), clean("ann", r, clean_ann)]
    for x in recs:
        x["attack_type"] = "ensemble" if x["attack"].startswith("ens") else x["attack"]
    return SimpleNamespace(models=model_rows(replicas=replicas), records=recs, clean=cl)


def test_snn_that_loses_less_is_supported_on_the_drop_with_one_run_label():
    full = mask(range(N))
    # both 100 % clean; under FGSM the SNN keeps 60 %, the ANN 30 %: drops 40 vs 70, difference +30
    h = H.evaluate_headline(whitebox({"fgsm": (mask(range(600)), mask(range(300)))}, full, full))
    (x,) = h["comparisons"]
    assert x["metric"] == "drop" and x["diff"] == pytest.approx(0.3) and x["low"] > 0.25
    assert x["verdict"] == h["verdict"] == "supported (one training run)"
    # the mirror: the SNN loses more
    h = H.evaluate_headline(whitebox({"fgsm": (mask(range(300)), mask(range(600)))}, full, full))
    assert h["verdict"] == "contradicted (one training run)"


def test_drop_not_raw_accuracy_decides_when_clean_accuracies_differ():
    # SNN 90 % clean -> 50 % adversarial (drop 40); ANN 60 % -> 50 % (drop 10): same adversarial
    # accuracy, but the SNN degrades more — the claim is contradicted, not "equal"
    h = H.evaluate_headline(whitebox({"fgsm": (mask(range(500)), mask(range(500)))},
                                     mask(range(900)), mask(range(600))))
    (x,) = h["comparisons"]
    assert x["absolute"]["diff"] == pytest.approx(0.0) and x["drop"]["diff"] == pytest.approx(-0.3)
    assert h["verdict"].startswith("contradicted")


def test_several_replicas_lose_the_one_run_label_and_the_ensemble_removes_the_advantage():
    full = mask(range(N))
    adv = {"pgd": (mask(range(700)), mask(range(200))),       # studies' attack: SNN +50 points
           "ens": (mask(range(300)), mask(range(100)))}       # ensemble: SNN +20 points
    h = H.evaluate_headline(whitebox(adv, full, full, replicas=(1, 2, 3)))
    assert {x["runs"] for x in h["comparisons"]} == {3}
    assert h["verdict"] == "supported"  # no "(one training run)": three target replicas
    (r,) = h["removed"]
    assert (r["attack"], r["ensemble"], r["replicas"]) == ("pgd", "ens", [1, 2, 3])
    assert r["advantage_study"] == pytest.approx(0.5) and r["advantage_ensemble"] == pytest.approx(0.2)
    assert r["removed"]["diff"] == pytest.approx(0.3) and r["removed"]["low"] > 0.2
    md = H.headline_md(h)
    assert "## Headline (claim H)" in md and "| pgd | +50.0 | ens | +20.0 | +30.0 [" in md


def test_many_inconclusive_and_one_lucky_comparison_is_not_a_supported_headline():
    rng = np.random.default_rng(0)
    full = mask(range(N))
    attacks = {}
    for k in range(11):  # same accuracy, independent images: every comparison's CI straddles 0
        s, a = rng.random(N) < 0.5, rng.random(N) < 0.5
        attacks[f"a{k}"] = (s, a)
    # +5 points from 300 vs 250 discordant images: one-sided p ≈ 0.016, alone "supported" (< 0.025),
    # but not below Holm's 0.025 / 12 for the smallest of twelve p-values
    both = set(range(600, 800))
    attacks["lucky"] = (mask(set(range(300)) | both), mask(set(range(300, 550)) | both))
    h = H.evaluate_headline(whitebox(attacks, full, full))
    lucky = [x for x in h["comparisons"] if x["attack"] == "lucky"][0]
    assert lucky["verdict"].startswith("supported") and h["verdict"] == "inconclusive"


def test_not_measured_without_white_box_pairs():
    h = H.evaluate_headline(SimpleNamespace(models=model_rows(), records=[], clean=[]))
    assert h["verdict"] == "not measured" and h["removed"] == []
    assert "not measured: no `ensemble` attack" in H.headline_md(h)


def test_attack_types_come_from_the_records():
    full = mask(range(N))
    w = World(whitebox({"pgd": (full, full), "ens1": (full, full)}, full, full))
    assert H.attack_types(w, "fashion_mnist") == {"pgd": "pgd", "ens1": "ensemble"}


def test_description_rst_opens_on_the_answer_and_escapes_cells():
    from docutils.core import publish_parts

    full = mask(range(N))
    data = whitebox({"fgsm": (mask(range(600)), mask(range(300)))}, full, full)
    env = provenance.environment("cpu")
    data.clean[0]["environment"] = env
    envs = D.environments(data.clean, [{"environment": env}, {}])
    assert envs == {provenance.describe(env): 2}
    claims = [{"id": "1", "claim": "a | b *c*", "verdict": "inconclusive", "numbers": "x_y"}]
    rst = D.description_rst(claims, H.evaluate_headline(data), envs)
    html = publish_parts(rst, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["html_body"]
    assert "Headline" in html and "supported (one training run)" in html and "a | b *c*" in html
    assert f"torch {env['torch']}" in html and f"CPU {env['cpu_capability']}" in html


def test_environment_names_what_decides_bit_identity():
    env = provenance.environment("cpu")
    assert set(provenance.IDENTITY_KEYS) <= set(env)
    import torch

    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads() and env["device"] == "cpu"
    assert env["cpu_capability"] in ("NO AVX", "DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX")
