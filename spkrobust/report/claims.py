"""The studies' claims judged on per-image paired statistics (``claims.md``).

Each claim is a set of paired comparisons (:func:`spkrobust.report.compare.compare`). The claim's
verdict controls its family-wise false-positive rate (:func:`claim_verdict`): Holm's step-down test
over the claim's comparisons, on each comparison's one-sided p-value (bootstrap or t), at ``ALPHA / 2`` per
direction (so 5 % for a wrong "supported" or "contradicted" together, and one comparison gives its
own CI verdict). Supported when Holm rejects "a ≤ b" for some comparison and "a ≥ b" for none
(mirror for contradicted), otherwise inconclusive; "(one training run)" when every comparison Holm
keeps rests on a single target replica; ``not measured`` says why no comparison could be made.
Beside the verdict each claim reports its pooled estimate (:func:`spkrobust.report.compare.pooled`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spkrobust.report import stats as S
from spkrobust.report.compare import (World, _paired, base_verdict, compare, fmt_diff, pooled, snn_vs_ann,
                                      verdict_of)
from spkrobust.report.data import _param_groups
from spkrobust.config.expand import eps_display, eps_label
from spkrobust.text import md_table
from spkrobust.config.vocab import SNN_KINDS

VERDICTS = ("supported", "contradicted", "inconclusive")
_STUDY19 = "the 2019 study: VGG9 on CIFAR-10 (10,000 test images), converted SNN at long T, spike-trained SNN at T≈100"
_STUDY20 = "the 2020 study: VGG5/VGG11 on CIFAR-10/100 (10,000 test images), spike-trained SNNs at T≈100–175, leak 0.99"
CLAIMS = [
    {"id": "1", "claim": "SNNs are at least as robust as the ANN under black-box attacks",
     "heads": ("SNN target", "ANN target"), "study": _STUDY19,
     "mirrors": "2019 study, black-box attacks: each network attacked by FGSM/PGD sets crafted on a second, "
                "independently trained copy of itself (clean: ANN 89.5, converted 85.6, spike-trained 87.1 %)"},
    {"id": "2", "claim": "On SNN targets, SNN-crafted (black-box) attacks are stronger than ANN-crafted ones",
     "heads": ("acc under ANN-crafted", "acc under SNN-crafted"), "study": _STUDY19,
     "mirrors": "2019 study, black-box attacks on the SNN: crafted on an independent ANN vs on an "
                "independent copy of the SNN (gradients through time)"},
    {"id": "3", "claim": "Fewer timesteps T make a spike-trained SNN more robust",
     "heads": ("smallest T", "largest T"), "study": _STUDY20,
     "mirrors": "2020 study, T sweep: spike-trained (hybrid) SNNs, each trained at its own T from one "
                "converted parent"},
    {"id": "3c", "claim": "Converted-SNN T sweep (not a claim of the studies: conversion needs long windows)",
     "heads": ("smallest T", "largest T"), "study": _STUDY20,
     "mirrors": "no experiment of the studies; converted SNNs of one ANN at several T, reported apart "
                "from claim 3"},
    {"id": "4", "claim": "More leak (smaller leak factor) makes a spike-trained SNN more robust",
     "heads": ("smallest leak", "largest leak"), "study": _STUDY20,
     "mirrors": "2020 study, leak sweep: spike-trained LIF SNNs, each trained at its own leak from one "
                "converted parent"},
    {"id": "5", "claim": "Spike-trained SNNs are at least as robust as the converted SNN they start from",
     "heads": ("spike-trained", "converted"), "study": _STUDY19,
     "mirrors": "2019 study: converted SNN vs the SNN fine-tuned from it by spike-based training"},
    {"id": "6", "claim": "LIF SNNs (with no more timesteps) are more robust than IF SNNs",
     "heads": ("LIF", "IF"), "study": _STUDY20,
     "mirrors": "2020 study, IF vs LIF: LIF with fewer timesteps more robust than IF with more "
                "(both spike-trained from one converted parent)"},
]
_CLAIM = {c["id"]: c for c in CLAIMS}

# ---- the claims ----------------------------------------------------------------------------------

def _settings(w: World, ds: str, atk: str, members):
    """(label, rule: member -> Src): white-box, black-box, then transfer from each source model that
    is none of ``members`` (the same adversarial sets for every member, independent replicas only)."""
    yield "white-box", lambda m: w.whitebox(ds, atk, m)
    yield "black-box", lambda m: w.blackbox(ds, atk, m)
    for src in sorted(w.sources[(ds, atk)] - set(members)):
        f = w.transfer(ds, atk, src, tuple(members))
        yield f"transfer from {src}", lambda m, f=f: f


def _pairs_compared(w: World, pairs_of: Callable[[str], list]) -> list[dict]:
    out = []
    for ds in w.datasets:
        for a, b, extra in pairs_of(ds):
            for atk in sorted(w.attacks[ds]):
                for label, rule in _settings(w, ds, atk, (a, b)):
                    c = compare(w, ds, atk, a, b, rule(a), rule(b), label)
                    if c:
                        out.append(_with_note(c, extra))
    return out


def _with_note(c: dict, extra: str) -> dict:
    if extra:
        c["note"] = "; ".join(x for x in (c["note"], extra) if x)
    return c


def _claim1(w: World) -> list[dict]:
    return snn_vs_ann(w, "black-box")


def _claim2(w: World) -> list[dict]:
    out = []
    for ds in w.datasets:
        for atk in sorted(w.attacks[ds]):
            for s in w.models(ds, SNN_KINDS):
                for a in w.models(ds, ("ann",)):
                    c = compare(w, ds, atk, s, s, w.transfer(ds, atk, a, (s,)), w.blackbox(ds, atk, s),
                                f"transfer from {a} vs black-box")
                    if c:
                        out.append(c)
    return out


def _sweep_groups(w: World, ds: str, param: str, kinds: tuple) -> list[list[str]]:
    """Models of ``kinds`` that differ only in ``param`` (one sweep from one parent), sorted by it."""
    return list(_param_groups(w, ds, param, kinds).values())


def _sweep_claim(w: World, param: str, label: str, kinds: tuple) -> list[dict]:
    """Smallest against largest value of ``param`` per sweep and setting; the note gives every member's
    adversarial accuracy on the same images and Spearman's rho over the members."""
    out = []
    for ds in w.datasets:
        for members in _sweep_groups(w, ds, param, kinds):
            lo, hi = members[0], members[-1]
            for atk in sorted(w.attacks[ds]):
                for slabel, rule in _settings(w, ds, atk, members):
                    c = compare(w, ds, atk, lo, hi, rule(lo), rule(hi), slabel)
                    if not c:
                        continue
                    vals, accs = [], []
                    for m in members:
                        pm = _paired(w, ds, atk, m, hi, rule(m), rule(hi))
                        if pm:
                            vals.append(w.info[(ds, m)][param])
                            accs.append(float(pm["adv_a"].mean()))
                    rho = S.spearman(vals, accs)
                    series = ", ".join(f"{label}={v:g}: {100 * x:.1f}" for v, x in zip(vals, accs))
                    out.append(_with_note(c, f"adv acc {series}; Spearman ρ({label}, acc) = "
                                             f"{'n/a' if rho is None else f'{rho:+.2f}'}"))
    return out


def _ancestor_pairs(w: World, ds: str):
    for s in w.models(ds, ("snn",)):
        for c in w.chain(ds, s)[1:]:
            if w.kind(ds, c) == "convert":
                yield s, c, ""
                break


def _if_lif_pairs(w: World, ds: str):
    def is_if(m):
        i = w.info[(ds, m)]
        return i.get("neuron") == "if" or i.get("leak") == 1.0

    snn = w.models(ds, ("snn",))
    for ifm in [m for m in snn if is_if(m)]:
        for lif in [m for m in snn if not is_if(m)]:
            ii, li = w.info[(ds, ifm)], w.info[(ds, lif)]
            same = all(ii.get(k) == li.get(k) for k in ("arch", "encoder", "parent", "epochs"))
            if same and (li.get("timesteps") or 0) <= (ii.get("timesteps") or 0):
                yield lif, ifm, f"LIF leak {li.get('leak')} T={li.get('timesteps')} vs IF T={ii.get('timesteps')}"


_WHY = {
    "1": "no black-box records (source = another replica of the same model) for both an SNN and an ANN target",
    "2": "no SNN target attacked both by an independent ANN replica and by another replica of itself",
    "3": "no spike-trained SNNs that differ only in T (a T sweep from one parent) with common records",
    "3c": "no converted SNNs that differ only in T with common records",
    "4": "no spike-trained SNNs that differ only in the leak (a leak sweep from one parent) with common records",
    "5": "no spike-trained SNN and the converted SNN it starts from evaluated on common adversarial sets",
    "6": "no spike-trained LIF and IF SNNs from one parent, trained as long (LIF T ≤ IF T), evaluated on common adversarial sets",
}


def evaluate_claims(data: Any) -> list[dict]:
    """Every claim of :data:`CLAIMS` with its comparisons (see the module doc)."""
    w = World(data)
    fns = {"1": _claim1, "2": _claim2,
           "3": lambda w: _sweep_claim(w, "timesteps", "T", ("snn",)),
           "3c": lambda w: _sweep_claim(w, "timesteps", "T", ("convert",)),
           "4": lambda w: _sweep_claim(w, "leak", "leak", ("snn",)),
           "5": lambda w: _pairs_compared(w, lambda ds: list(_ancestor_pairs(w, ds))),
           "6": lambda w: _pairs_compared(w, lambda ds: list(_if_lif_pairs(w, ds)))}
    out = []
    for c in CLAIMS:
        comps = fns[c["id"]](w)
        why = _WHY[c["id"]] + (f" ({w.missing} records without per-image outcomes: rerun evaluate)" if w.missing else "")
        out.append(_verdict(c, comps, why, w))
    return out


def claim_verdict(comps: list[dict], alpha: float = S.ALPHA) -> tuple[str, int, int]:
    """(verdict, Holm rejections for "a > b", for "a < b") over the comparisons' one-sided p-values
    (``p_greater``/``p_less``), Holm at ``alpha / 2`` per direction (see the module doc)."""
    sup = S.holm([x["p_greater"] for x in comps], alpha / 2)
    con = S.holm([x["p_less"] for x in comps], alpha / 2)
    ns, nc = sum(sup), sum(con)
    side = 1 if ns and not nc else -1 if nc and not ns else 0
    kept = [x for x, r in zip(comps, sup if ns else con) if r]
    return verdict_of(side, bool(side) and all(x.get("runs", 1) == 1 for x in kept)), ns, nc


def _verdict(c: dict, comps: list[dict], why: str, w: World) -> dict:
    base = {"id": c["id"], "claim": c["claim"], "mirrors": c["mirrors"], "comparisons": comps}
    if not comps:
        return dict(base, verdict="not measured", numbers=why, differs="")
    verdict, ns, nc = claim_verdict(comps)
    pool = pooled(comps)
    k = {v: sum(base_verdict(x["verdict"]) == v for x in comps) for v in VERDICTS}
    diffs = [x["diff"] for x in comps if x["diff"] is not None]
    hw = [(x["high"] - x["low"]) / 2 for x in comps if x["diff"] is not None]
    nums = pooled_text(pool)
    nums += (f"{k['supported']} supported, {k['contradicted']} contradicted, {k['inconclusive']} inconclusive "
             f"of {len(comps)} comparisons; after Holm: {ns} supported, {nc} contradicted")
    runs = sorted({x.get("runs", 1) for x in comps})
    nums += f"; target replicas per comparison: {_span(runs)}"
    if diffs:
        nums += (f"; diff {100 * min(diffs):+.1f} to {100 * max(diffs):+.1f} points, CI half-width ≤ "
                 f"{100 * max(hw):.1f}")
    conf = sum(x["metric"] == "conditional" for x in comps)
    if conf:
        nums += f"; {conf} judged on conditional robustness (clean accuracies differ)"
    return dict(base, verdict=verdict, numbers=nums, differs=_differs(c, comps, w),
                pooled=None if pool is None else pool.as_dict())


def pooled_text(pool) -> str:
    """``pooled +x.x [lo, hi] (R replicas); `` for a claim's numbers ('' when nothing to pool)."""
    if pool is None:
        return ""
    return f"pooled {fmt_diff(pool.as_dict())} points ({pool.runs} replica{'s' if pool.runs > 1 else ''}); "


def _span(n: list[int]) -> str:
    return str(n[0]) if n[0] == n[-1] else f"{n[0]}–{n[-1]}"


def _differs(c: dict, comps: list[dict], w: World) -> str:
    ds = sorted({x["dataset"] for x in comps})
    names = {(x["dataset"], m) for x in comps for m in (x["a_name"], x["b_name"])}
    archs = sorted({str(w.info[k].get("arch")) for k in names if w.info[k].get("arch")})
    Ts = sorted({int(w.info[k]["timesteps"]) for k in names if w.info[k].get("timesteps") is not None})
    n = sorted({x["n"] for x in comps})
    eps = sorted({e for x in comps for e in x["eps"]})
    return (f"this run: {', '.join(ds)}, {', '.join(archs) or 'arch unknown'}, {_span(n)} paired test images, "
            f"T {', '.join(map(str, Ts)) or '–'}, eps {', '.join(f'{255 * e:g}/255' for e in eps)}; "
            f"{c['study']}")


# ---- claims.md -----------------------------------------------------------------------------------

def claims_md(claims: list[dict]) -> str:
    lines = ["# The studies' claims on measured numbers\n\n",
             ("Each comparison pairs side a (the side the claim calls more robust) with side b on the same "
             "test images (repeats, eps > 0 and sources averaged per image first). Differences a − b in "
             "points with a 95 % CI; one replica: a seeded paired bootstrap over images "
             f"({S.N_RESAMPLES} resamples): *absolute* adversarial accuracy; *drop* = clean − adversarial "
             "(b's drop − a's); *conditional* = fraction of the images both classify correctly when clean "
             "that stay correct. The verdict uses the conditional metric when McNemar's test says the clean "
             "accuracies differ (p < 0.05), else the absolute one: supported when the CI lies above 0, "
             "contradicted when below, inconclusive otherwise. With several independently trained target "
             "replicas the CI comes from a crossed random-effects model of replicas and images (each "
             "variance part at its own Student-t quantile: with 3 replicas and a large training spread the "
             "95 % factor is 4.3), so it carries the training-seed spread; with one replica it is the image "
             "bootstrap and the verdict reads \"(one training run)\": its CI says nothing of another "
             "training. **Pooled** (per claim): the mean of its comparisons' verdict metrics, with the same "
             "model's CI on their per-replica, per-image contributions summed, so comparisons that share "
             "networks or images are not counted as independent evidence. **Claim verdict** (one rule, family-wise false-positive "
             "rate 5 %): Holm's step-down test over the claim's comparisons on their one-sided "
             "p-values, at 2.5 % per direction; supported when Holm keeps some comparison's \"a > b\" and "
             "none's \"a < b\" (mirror for contradicted), else inconclusive — so one lucky comparison "
             "among many inconclusive ones does not make a claim. Sources never share the target's replica "
             "chain (a model and the models made from it, same replica). Another training: rerun with "
             "`--config seed=1` and compare the two report folders with `spkrobust agree` (verdict "
             "conflicts; each claim's pooled estimates and their difference, Holm over the claims). "
             "Definitions: `spkrobust.report.claims`.\n\n")]
    lines.append(md_table(["#", "claim", "verdict", "numbers"],
                           [[c["id"], c["claim"], f"**{c['verdict']}**", c["numbers"]] for c in claims]))
    for c in claims:
        ha, hb = _CLAIM[c["id"]]["heads"]
        lines.append(f"\n## Claim {c['id']}: {c['claim']}\n\nMirrors: {c['mirrors']}.\n")
        if not c["comparisons"]:
            lines.append(f"\nnot measured: {c['numbers']}\n")
            continue
        lines.append(f"\nHow this run differs — {c['differs']}.\n\n")
        rows = []
        for x in c["comparisons"]:
            rows.append([x["dataset"], x["attack"], x["setting"], f"{ha}: {x['a_src']}", f"{100 * x['a']:.1f}",
                         f"{hb}: {x['b_src']}", f"{100 * x['b']:.1f}", fmt_diff(x["absolute"]), fmt_diff(x["drop"]),
                         fmt_diff(x["conditional"]) + f" (n={x['n_conditional']})", fmt_diff(x["clean"]),
                         x["metric"], f"**{x['verdict']}**", x["n"],
                         ", ".join(eps_display(eps_label(e)) for e in x["eps"]), x["note"]])
        lines.append(md_table(["dataset", "attack", "setting", "a (sources → target)", "a adv %",
                                "b (sources → target)", "b adv %", "absolute", "drop", "conditional",
                                "clean diff", "verdict from", "verdict", "images", "eps", "notes"], rows))
    return "".join(lines)


