"""spkrobust.report.claims on constructed per-image outcomes with known answers: supported, contradicted,
inconclusive, the clean-accuracy confound, independent source replicas, and outcomes through aggregate."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from spkrobust.config.expand import setting_of
from spkrobust.evaluation.outcomes import decode, encode
from spkrobust.report import aggregate as agg, claims as C, render
from spkrobust.report.compare import World
from spkrobust.config.vocab import CLEAN_FORMAT, METRICS_FORMAT, RECORD_FORMAT

DS, N, EPS = "fashion_mnist", 1000, 8 / 255
# name -> (kind, parent, T, neuron, leak)
MODELS = {"ann": ("ann", None, None, None, None), "snn": ("snn", "conv", 4, "lif", 0.99),
          "conv": ("convert", "ann", 32, "if", 1.0)}


def mask(idx) -> np.ndarray:
    m = np.zeros(N, bool)
    m[list(idx)] = True
    return m


def model_rows(names=("ann", "snn"), replicas=(1, 2)):
    rows = []
    for n in names:
        k, parent, T, neuron, leak = MODELS[n]
        rows += [{"dataset": DS, "model": n, "kind": k, "arch": "vgg5", "replica": r, "parent": parent,
                  "base": n, "timesteps": T, "neuron": neuron, "leak": leak, "encoder": "poisson"} for r in replicas]
    return rows


def rec(source, sr, target, tr, correct, attack="fgsm"):
    return {"format": RECORD_FORMAT, "dataset": DS, "source": source, "source_replica": sr, "target": target, "target_replica": tr,
            "attack": attack, "attack_type": attack, "eps": EPS, "eps_label": "8_255",
            "setting": setting_of(source, sr, target, tr), "adv_acc": float(np.mean(correct)),
            "outcomes": encode([correct])}


def clean(model, r, correct):
    return {"format": CLEAN_FORMAT, "dataset": DS, "model": model, "replica": r, "clean_acc": float(np.mean(correct)),
            "outcomes": encode([correct])}


def world(snn_adv, ann_adv, snn_clean=None, ann_clean=None, extra=()):
    """Black-box records (replica 2 -> 1) of an SNN and an ANN target: the data of claim 1."""
    snn_clean = mask(range(N)) if snn_clean is None else snn_clean
    ann_clean = mask(range(N)) if ann_clean is None else ann_clean
    return SimpleNamespace(models=model_rows(),
                           records=[rec("snn", 2, "snn", 1, snn_adv), rec("ann", 2, "ann", 1, ann_adv), *extra],
                           clean=[clean("snn", 1, snn_clean), clean("ann", 1, ann_clean)])


def claim(data, cid):
    return {c["id"]: c for c in C.evaluate_claims(data)}[cid]


def test_supported_contradicted_inconclusive():
    hi, lo = mask(range(700)), mask(range(500))  # 70 % vs 50 %, nested: every image agrees in sign
    c = claim(world(hi, lo), "1")
    assert c["verdict"] == "supported (one training run)" and "; 1 supported, 0 contradicted" in c["numbers"]
    # the pooled estimate opens the numbers: one comparison, so its own difference
    assert c["numbers"].startswith("pooled +20.0 [") and abs(c["pooled"]["diff"] - 0.2) < 1e-12
    (x,) = c["comparisons"]
    assert x["absolute"]["diff"] == pytest.approx(0.2) and 0.15 < x["low"] < 0.2 < x["high"] < 0.25
    assert x["metric"] == "absolute" and x["a_src"] == "snn r2 → snn r1" and x["b_src"] == "ann r2 → ann r1"
    assert claim(world(lo, hi), "1")["verdict"] == "contradicted (one training run)"
    # same accuracy on different images: the difference is exactly 0 and the CI straddles it
    c = claim(world(mask(range(600)), mask(range(400, N))), "1")
    (x,) = c["comparisons"]
    assert c["verdict"] == "inconclusive" and x["diff"] == 0 and x["low"] < 0 < x["high"]
    md = C.claims_md(C.evaluate_claims(world(hi, lo)))
    assert "| 1 | SNNs are at least as robust" in md and "+20.0 [" in md and "**supported (one training run)**" in md
    assert "Mirrors: 2019 study" in md and "How this run differs — this run: fashion_mnist, vgg5, 1000" in md


def test_confound_uses_conditional_robustness_with_its_note():
    # SNN: clean on 70 %, keeps 90 % of them (63 % adversarial); ANN: clean 100 %, 80 % adversarial,
    # but of the SNN's 700 clean-correct images only 500 stay correct. Absolute says contradicted
    # (-17 points); conditional on the images both get right says supported (90 % vs 71.4 %).
    snn_clean = mask(range(700))
    snn_adv = mask(range(630))
    ann_adv = mask(list(range(500)) + list(range(700, N)))
    assert ann_adv.sum() == 800
    c = claim(world(snn_adv, ann_adv, snn_clean=snn_clean), "1")
    (x,) = c["comparisons"]
    assert x["absolute"]["diff"] == pytest.approx(-0.17) and x["absolute"]["high"] < 0
    assert x["n_conditional"] == 700 and x["conditional"]["diff"] == pytest.approx(0.9 - 500 / 700)
    assert x["metric"] == "conditional" and x["verdict"] == "supported (one training run)" and c["verdict"] == "supported (one training run)"
    assert "clean accuracy differs by -30.0 [" in x["note"] and x["clean_p"] < 0.05
    assert x["drop"]["diff"] == pytest.approx((1 - 0.8) - (0.7 - 0.63))  # ANN's drop - SNN's drop


def test_claim2_never_uses_a_source_of_the_targets_replica_chain():
    # the SNN r1 is made from conv r1, made from ann r1: ann r1 -> snn r1 is nearly white-box and
    # must not be mixed in; claim 2 sets ann r2 -> snn r1 against snn r2 -> snn r1
    rows = model_rows(("ann", "conv", "snn"))
    recs = [rec("ann", 1, "snn", 1, mask(range(100))),  # related: would make ANN-crafted look strong
            rec("ann", 2, "snn", 1, mask(range(800))),
            rec("snn", 2, "snn", 1, mask(range(600)))]
    data = SimpleNamespace(models=rows, records=recs, clean=[clean("snn", 1, mask(range(900)))])
    c = claim(data, "2")
    (x,) = c["comparisons"]
    assert x["a_src"] == "ann r2 → snn r1" and x["b_src"] == "snn r2 → snn r1"
    assert x["absolute"]["diff"] == pytest.approx(0.2) and c["verdict"] == "supported (one training run)"
    w = World(data)
    assert w.related(DS, "ann", 1, "snn", 1) and w.related(DS, "conv", 1, "snn", 1)
    assert not w.related(DS, "ann", 2, "snn", 1) and not w.related(DS, "snn", 2, "snn", 1)
    # with only the related ANN replica, claim 2 is not measured
    data.records = [recs[0], recs[2]]
    assert claim(data, "2")["verdict"] == "not measured"


def test_sweep_claim_compares_members_on_common_independent_sources():
    rows = model_rows(("ann", "conv"))
    for T, n_ok in ((4, 700), (8, 650), (16, 600)):
        rows.append({"dataset": DS, "model": f"snn_T-T{T}", "kind": "snn", "arch": "vgg5", "replica": 1,
                     "parent": "conv", "base": "snn_T", "timesteps": T, "neuron": "lif", "leak": 0.99,
                     "encoder": "poisson"})
    recs, cl = [], []
    for T, n_ok in ((4, 700), (8, 650), (16, 600)):
        recs += [rec("ann", 1, f"snn_T-T{T}", 1, mask(range(10))), rec("ann", 2, f"snn_T-T{T}", 1, mask(range(n_ok)))]
        cl.append(clean(f"snn_T-T{T}", 1, mask(range(900))))
    c = claim(SimpleNamespace(models=rows, records=recs, clean=cl), "3")
    (x,) = c["comparisons"]
    assert x["setting"] == "transfer from ann" and x["a_src"] == "ann r2 → snn_T-T4 r1"
    assert x["a_name"] == "snn_T-T4" and x["b_name"] == "snn_T-T16" and c["verdict"] == "supported (one training run)"
    assert "T=4: 70.0, T=8: 65.0, T=16: 60.0" in x["note"] and "ρ(T, acc) = -1.00" in x["note"]


def test_outcomes_survive_aggregate_and_reach_the_claims(tmp_path):
    data = world(mask(range(700)), mask(range(500)))
    paths = {"rec": [], "clean": []}
    for i, r in enumerate(data.records):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        paths["rec"].append(p)
    for c in data.clean:
        p = tmp_path / DS / "clean" / c["model"] / f"r{c['replica']}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(c))
        paths["clean"].append(p)
    mets = []
    for m in data.models:
        p = tmp_path / f"m_{m['model']}_{m['replica']}.json"
        p.write_text(json.dumps({"format": METRICS_FORMAT, "name": m["model"], "base": m["model"], "dataset": DS,
                                 "replica": m["replica"], "kind": m["kind"], "seed": 0, "clean_acc": 0.7, "epochs": 1,
                                 "meta": {"arch": "vgg5"}, "config": {"model": {"from": m["parent"]}}}))
        mets.append(p)
    out = tmp_path / "report"
    agg.aggregate(paths["rec"], mets, out, paths["clean"])
    merged = json.loads((out / "records.json").read_text())
    for before, after in zip(sorted(data.records, key=lambda r: r["target"]),
                             sorted(merged["records"], key=lambda r: r["target"])):
        assert np.array_equal(decode(before["outcomes"])[1], decode(after["outcomes"])[1])
    assert {c["model"] for c in merged["clean"]} == {"snn", "ann"}
    assert all(decode(c["outcomes"])[1].shape == (1, N) for c in merged["clean"])
    render.report(out, extras=False)
    assert "| 1 | SNNs are at least as robust as the ANN under black-box attacks | **supported (one training run)** |" in \
        (out / "claims.md").read_text()


def test_converted_T_sweep_apart_from_claim_3_and_if_vs_lif():
    rows = model_rows(("ann",))
    members = [("conv-T8", "convert", "ann", 8, "if", 1.0, "conv"), ("conv-T16", "convert", "ann", 16, "if", 1.0, "conv"),
               ("snn_T-T4", "snn", "conv-T16", 4, "lif", 0.99, "snn_T"), ("snn_T-T8", "snn", "conv-T16", 8, "lif", 0.99, "snn_T"),
               ("snn_if", "snn", "conv-T16", 8, "if", 1.0, "snn_if")]
    recs, cl = [], []
    for name, kind, parent, T, neuron, leak, base in members:
        rows.append({"dataset": DS, "model": name, "kind": kind, "arch": "vgg5", "replica": 1, "parent": parent,
                     "base": base, "timesteps": T, "neuron": neuron, "leak": leak, "encoder": "poisson"})
        ok = {"conv-T8": 300, "conv-T16": 500, "snn_T-T4": 700, "snn_T-T8": 600, "snn_if": 550}[name]
        recs.append(rec("ann", 2, name, 1, mask(range(ok))))
        cl.append(clean(name, 1, mask(range(900))))
    claims = {c["id"]: c for c in C.evaluate_claims(SimpleNamespace(models=rows, records=recs, clean=cl))}
    assert [(x["a_name"], x["b_name"]) for x in claims["3"]["comparisons"]] == [("snn_T-T4", "snn_T-T8")]
    assert [(x["a_name"], x["b_name"]) for x in claims["3c"]["comparisons"]] == [("conv-T8", "conv-T16")]
    assert claims["3"]["verdict"] == "supported (one training run)" and claims["3c"]["verdict"] == "contradicted (one training run)"
    # IF vs LIF: LIF members with no more timesteps than the IF one, same parent
    assert sorted((x["a_name"], x["b_name"]) for x in claims["6"]["comparisons"]) == \
        [("snn_T-T4", "snn_if"), ("snn_T-T8", "snn_if")]
    assert claims["6"]["verdict"] == "supported (one training run)"


def _comp(p_greater, p_less, runs=3):
    return {"p_greater": p_greater, "p_less": p_less, "runs": runs}


def test_claim_rule_controls_multiplicity():
    # many inconclusive + one lucky comparison whose own CI lies above 0 (p = 0.02 < 0.025): not supported
    lucky = [_comp(0.02, 0.98)] + [_comp(0.5, 0.5)] * 11
    assert C.claim_verdict(lucky) == ("inconclusive", 0, 0)
    # one strong comparison survives Holm over 12
    strong = [_comp(0.0005, 0.9995)] + [_comp(0.5, 0.5)] * 11
    assert C.claim_verdict(strong) == ("supported", 1, 0)
    # both directions rejected: inconclusive; mirror for contradicted
    assert C.claim_verdict([_comp(0.0005, 1), _comp(1, 0.0005)])[0] == "inconclusive"
    assert C.claim_verdict([_comp(1, 0.0005), _comp(0.5, 0.5)])[0] == "contradicted"
    # supported only by single-replica comparisons: labelled
    assert C.claim_verdict([_comp(0.0005, 1, runs=1)])[0] == "supported (one training run)"
    # the rule's false-positive rate on null comparisons (uniform p-values, 12 per claim) stays <= 5 %
    rng = np.random.default_rng(0)
    false = 0
    for _ in range(2000):
        p = rng.random(12)
        false += C.claim_verdict([_comp(x, 1 - x) for x in p])[0] != "inconclusive"
    assert false / 2000 <= 0.05


def test_three_target_replicas_give_a_plain_verdict():
    # black-box records r(k+1 mod 3) -> rk of both targets: three training runs per side
    hi, lo = mask(range(700)), mask(range(500))
    recs, cl = [], []
    for tr in (1, 2, 3):
        sr = tr % 3 + 1
        recs += [rec("snn", sr, "snn", tr, hi), rec("ann", sr, "ann", tr, lo)]
        cl += [clean("snn", tr, mask(range(N))), clean("ann", tr, mask(range(N)))]
    data = SimpleNamespace(models=model_rows(replicas=(1, 2, 3)), records=recs, clean=cl)
    c = claim(data, "1")
    (x,) = c["comparisons"]
    assert x["runs"] == 3 and c["verdict"] == "supported" and "one training run" not in x["note"]
    assert "target replicas per comparison: 3" in c["numbers"]
    # every replica agrees (+20 points): the pooled estimate is it, over 3 training runs
    assert c["pooled"]["runs"] == 3 and abs(c["pooled"]["diff"] - 0.2) < 1e-12 and c["pooled"]["low"] > 0
