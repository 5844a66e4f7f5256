"""The 2020 study's headline claim, judged white-box: SNNs degrade less than the ANN under attack.

Sharmin et al. (ECCV 2020) state that accuracy degradation under attack is less severe in SNNs
than in ANNs, measured white-box with gradients crafted through the SNN itself (the technique the
study proposes). Here, per dataset, attack, SNN target ``s`` and ANN target ``a``, both attacked
white-box (each by itself, replica by replica), paired on the same test images and target replicas
(:func:`spkrobust.report.compare.compare`):

* the **drop** (clean − adversarial accuracy), as ``drop_a − drop_s``: positive when the SNN loses
  less; the verdict of each comparison comes from it, with its 95 % CI (the image bootstrap for
  one target replica, the crossed replica x image t-interval for several);
* the **conditional** metric beside it (on the images both classify correctly when clean, the
  fraction kept), which does not mix in a difference of clean accuracy.

The claim's verdict is the claims' one rule (:func:`spkrobust.report.claims.claim_verdict`: Holm
over the comparisons' one-sided p-values, family-wise 5 %). Then, side by side, for each studies'
attack (:data:`spkrobust.config.vocab.STUDY_ATTACK_TYPES`) and each ``ensemble`` attack of the same
dataset: how much of the SNN's advantage the adaptive attack takes away, ``advantage(study attack) −
advantage(ensemble)`` per image (the clean terms cancel: ``(adv_s − adv_a)`` under the study attack
minus the same under the ensemble), with its paired CI. Positive: the study attack overstated the
SNN's advantage by that much.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from spkrobust.config.vocab import SNN_KINDS, STUDY_ATTACK_TYPES
from spkrobust.report import stats as S
from spkrobust.report.compare import World, _paired, _pts, base_verdict, fmt_diff, pooled, snn_vs_ann, verdict_of
from spkrobust.config.expand import eps_display, eps_label
from spkrobust.text import md_table

CLAIM = {"id": "H", "claim": "SNNs degrade less than the ANN under white-box attacks (drop = clean − adversarial)",
         "mirrors": "2020 study, white-box attacks: FGSM/PGD crafted through each network itself (gradients "
                    "through time for the SNN), accuracy drop of the spike-trained SNNs against the ANN's; here "
                    "also under the preset's adaptive ensemble"}
WHY_NOT = ("no SNN and ANN target both attacked white-box (each by itself) by the same attack on common images")


def attack_types(w: World, ds: str) -> dict[str, str]:
    """attack name -> its type, from the records (the type every record of the attack carries)."""
    out = {}
    for (d, atk, _t, _tr), recs in w.recs.items():
        if d == ds and recs:
            r = recs[0]
            out[atk] = str(r.get("attack_type") or (r.get("attack_params") or {}).get("type") or atk)
    return out


def _by_drop(c: dict) -> dict:
    """A comparison judged on its drop metric (``drop_b − drop_a``: positive = a degrades less)."""
    d = c["drop"]
    verdict = verdict_of(1 if d["low"] > 0 else -1 if d["high"] < 0 else 0, c["runs"] == 1)
    return dict(c, metric="drop", diff=d["diff"], low=d["low"], high=d["high"], p_greater=d["p_greater"],
                p_less=d["p_less"], verdict=verdict)


def headline_comparisons(w: World) -> list[dict]:
    return [_by_drop(c) for c in snn_vs_ann(w, "white-box")]


def _advantage(w: World, ds: str, atk: str, s: str, a: str) -> dict | None:
    """Per target replica and image: ``adv_s − adv_a`` under ``atk`` (white-box), keyed by replica/image."""
    p = _paired(w, ds, atk, s, a, w.whitebox(ds, atk, s), w.whitebox(ds, atk, a))
    if p is None:
        return None
    trs = [tr for tr, _, _ in p["plan"]]
    return {"trs": trs, "pos": p["pos"], "x": p["adv_a"] - p["adv_b"]}


def removed_by_ensemble(w: World) -> list[dict]:
    """For each (dataset, SNN, ANN, studies' attack, ensemble): the SNN's white-box advantage the
    ensemble removes, ``[(adv_s − adv_a) | study] − [(adv_s − adv_a) | ensemble]``, paired CI."""
    rows = []
    for ds in w.datasets:
        types = attack_types(w, ds)
        studies = sorted(k for k, t in types.items() if t in STUDY_ATTACK_TYPES)
        ensembles = sorted(k for k, t in types.items() if t == "ensemble")
        for s in w.models(ds, SNN_KINDS):
            for a in w.models(ds, ("ann",)):
                for ens in ensembles:
                    e = _advantage(w, ds, ens, s, a)
                    if e is None:
                        continue
                    for atk in studies:
                        st = _advantage(w, ds, atk, s, a)
                        if st is None:
                            continue
                        trs = sorted(set(st["trs"]) & set(e["trs"]))
                        pos = np.intersect1d(st["pos"], e["pos"])
                        if not trs or len(pos) < 2:
                            continue

                        def pick(v, trs=trs, pos=pos):
                            rows_ = [v["trs"].index(tr) for tr in trs]
                            cols = np.searchsorted(v["pos"], pos)
                            return v["x"][np.ix_(rows_, cols)]

                        xs, xe = pick(st), pick(e)
                        d = S.paired_diff_groups(xs, xe)
                        rows.append({"dataset": ds, "snn": s, "ann": a, "attack": atk, "ensemble": ens,
                                     "replicas": trs, "n": int(len(pos)),
                                     "advantage_study": float(xs.mean()), "advantage_ensemble": float(xe.mean()),
                                     "removed": d.as_dict()})
    return rows


def headline(w: World) -> dict:
    """The headline claim (verdict, numbers, comparisons) and the ensemble side-by-side rows."""
    from spkrobust.report.claims import claim_verdict, pooled_text

    comps = headline_comparisons(w)
    base = {**CLAIM, "comparisons": comps, "removed": removed_by_ensemble(w)}
    if not comps:
        return dict(base, verdict="not measured", numbers=WHY_NOT, pooled=None)
    verdict, ns, nc = claim_verdict(comps)
    pool = pooled(comps)
    k = {v: sum(base_verdict(x["verdict"]) == v for x in comps) for v in ("supported", "contradicted", "inconclusive")}
    nums = pooled_text(pool) + (
        f"{k['supported']} supported, {k['contradicted']} contradicted, {k['inconclusive']} inconclusive of "
        f"{len(comps)} comparisons on the drop; after Holm: {ns} supported, {nc} contradicted")
    return dict(base, verdict=verdict, numbers=nums, pooled=None if pool is None else pool.as_dict())


def headline_md(h: dict) -> str:
    """The headline section of ``claims.md`` (also opens ``index.md``)."""
    lines = [f"## Headline (claim {h['id']}): {h['claim']}\n\nMirrors: {h['mirrors']}.\n\n"
             f"**Verdict: {h['verdict']}** — {h['numbers']}.\n\n"]
    if h["comparisons"]:
        lines.append("Drop difference = ANN's drop − SNN's drop (points; > 0: the SNN degrades less), "
                     "white-box on both sides, paired 95 % CI; conditional = SNN − ANN on the images both "
                     "classify correctly when clean.\n\n")
        lines.append(md_table(
            ["dataset", "attack", "SNN (target)", "SNN clean %", "SNN adv %", "ANN (target)", "ANN clean %", "ANN adv %",
             "drop difference", "conditional", "verdict", "replicas", "images", "eps"],
            [[x["dataset"], x["attack"], x["a_name"], f"{100 * x['clean_a']:.1f}", f"{100 * x['a']:.1f}", x["b_name"],
              f"{100 * x['clean_b']:.1f}", f"{100 * x['b']:.1f}", fmt_diff(x["drop"]), fmt_diff(x["conditional"]),
              f"**{x['verdict']}**", x["runs"], x["n"], ", ".join(eps_display(eps_label(e)) for e in x["eps"])]
             for x in h["comparisons"]]))
    lines.append("\n### The studies' attack against the adaptive ensemble\n\n")
    if not h["removed"]:
        lines.append("not measured: no `ensemble` attack beside a studies' attack (FGSM/PGD) on an SNN and an ANN, "
                     "both white-box.\n")
        return "".join(lines)
    lines.append("SNN advantage = SNN adv − ANN adv (points, same images, white-box); removed = advantage under "
                 "the studies' attack − advantage under the ensemble, paired 95 % CI (> 0: the studies' attack "
                 "overstated the SNN's advantage by that much).\n\n")
    lines.append(md_table(
        ["dataset", "SNN", "ANN", "studies' attack", "advantage", "ensemble", "advantage", "removed by the ensemble",
         "replicas", "images"],
        [[r["dataset"], r["snn"], r["ann"], r["attack"], _pts(r["advantage_study"]), r["ensemble"],
          _pts(r["advantage_ensemble"]), fmt_diff(r["removed"]), len(r["replicas"]), r["n"]] for r in h["removed"]]))
    return "".join(lines)


def evaluate_headline(data: Any) -> dict:
    return headline(World(data))
