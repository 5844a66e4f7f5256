"""The studies' claims judged on per-image paired statistics (``claims.md``).

:func:`evaluate_claims` reads ``data.models`` (``models.csv`` rows) and ``data.records`` /
``data.clean`` (the raw records of ``records.json``, each with per-image ``outcomes``). A comparison
sets side ``a`` (the side the claim calls more robust) against side ``b`` on one dataset and attack;
a side is a target attacked by named sets (sources with replicas). Both sides are paired on the
images every record involved covers; an image's rate is averaged over repeats, the common eps > 0
and the side's sources, then over target replicas. Metrics, each ``a - b`` with a seeded paired-
bootstrap 95 % CI (:mod:`spkrobust.stats`): *absolute* adversarial accuracy; *drop* (clean - adv,
as ``drop_b - drop_a``); *conditional* robustness (on the images both classify correctly when clean,
the fraction kept). If McNemar's test on the clean outcomes says the clean accuracies differ, the
verdict comes from the conditional metric ("clean accuracy differs by X (CI)"), else from the
absolute one: supported / contradicted when the CI lies above / below 0, inconclusive otherwise. A
claim is supported when some comparison is and none contradicts it (mirror for contradicted).

Independence (issue 16): a black-box or transfer source never shares the target's replica chain
(same replica and a common root along ``parent``): ``ann r1`` never attacks ``snn_bp r1`` (made
from ``ann r1``); ``ann r2`` does. Rows name their replicas. ``noise`` attacks are left out.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from spkrobust import stats as S
from spkrobust.outcomes import align

SNN_KINDS = ("convert", "snn")
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

Src = Callable[[int], list]  # target replica -> [(source, source replica), ...]


# ---- the records, indexed ------------------------------------------------------------------------

class _World:
    def __init__(self, data: Any):
        # the report's one list of baseline attacks (imported here: the report imports this module)
        from spkrobust.report import NON_ATTACK_TYPES

        self.info: dict[tuple, dict] = {}
        for m in getattr(data, "models", []) or []:
            self.info.setdefault((m["dataset"], m["model"]), m)
        self.clean: dict[tuple, Any] = {}
        for c in getattr(data, "clean", []) or []:
            if c.get("outcomes") is not None:
                self.clean[(c["dataset"], c["model"], int(c["replica"]))] = c["outcomes"]
        self.recs: dict[tuple, list[dict]] = defaultdict(list)
        self.missing = 0
        self.attacks: dict[str, set] = defaultdict(set)
        self.sources: dict[tuple, set] = defaultdict(set)  # (ds, atk) -> source models
        for r in getattr(data, "records", []) or []:
            atype = r.get("attack_type") or (r.get("attack_params") or {}).get("type")
            if atype in NON_ATTACK_TYPES or r["attack"] in NON_ATTACK_TYPES:
                continue
            if r.get("outcomes") is None:
                self.missing += 1
                continue
            ds, atk = r["dataset"], r["attack"]
            self.recs[(ds, atk, r["target"], int(r["target_replica"]))].append(r)
            self.attacks[ds].add(atk)
            self.sources[(ds, atk)].add(r["source"])
            for side in ("source", "target"):
                self.info.setdefault((ds, r[side]), {"dataset": ds, "model": r[side],
                                                     "kind": r.get(f"{side}_kind")})
        self.datasets = sorted(self.attacks)

    def kind(self, ds: str, m: str) -> str:
        return self.info.get((ds, m), {}).get("kind") or ""

    def models(self, ds: str, kinds=None) -> list[str]:
        return sorted(m for (d, m), i in self.info.items() if d == ds and (kinds is None or i.get("kind") in kinds))

    def chain(self, ds: str, m: str) -> list[str]:
        """``m`` and its ancestors along ``parent`` (a replica is built from the parent's same replica)."""
        out = [m]
        while (p := self.info.get((ds, out[-1]), {}).get("parent")) and p not in out:
            out.append(p)
        return out

    def related(self, ds: str, s: str, sr: int, t: str, tr: int) -> bool:
        """Same replica chain: same replica and a common root model (weights derived from one another)."""
        return int(sr) == int(tr) and self.chain(ds, s)[-1] == self.chain(ds, t)[-1]

    def avail(self, ds: str, atk: str, t: str, tr: int) -> set:
        return {(r["source"], int(r["source_replica"])) for r in self.recs.get((ds, atk, t, tr), [])}

    def target_replicas(self, ds: str, atk: str, t: str) -> set:
        return {tr for (d, a, tt, tr) in self.recs if (d, a, tt) == (ds, atk, t)}

    # source rules
    def whitebox(self, ds, atk, m) -> Src:
        return lambda tr: [x for x in [(m, tr)] if x in self.avail(ds, atk, m, tr)]

    def blackbox(self, ds, atk, m) -> Src:
        return lambda tr: sorted(x for x in self.avail(ds, atk, m, tr) if x[0] == m and x[1] != tr)

    def transfer(self, ds, atk, src, targets) -> Src:
        """Replicas of ``src`` independent of every target in ``targets`` (same sets on each side)."""
        def f(tr):
            sets = [{x for x in self.avail(ds, atk, t, tr) if x[0] == src and not self.related(ds, src, x[1], t, tr)}
                    for t in targets]
            return sorted(set.intersection(*sets)) if sets else []
        return f


# ---- one comparison ------------------------------------------------------------------------------

def _eps_of(w, ds, atk, t, tr, srcs) -> set:
    per = [{r["eps"] for r in w.recs.get((ds, atk, t, tr), []) if (r["source"], int(r["source_replica"])) == s
            and r["eps"] > 0} for s in srcs]
    return set.intersection(*per) if per else set()


def _fmt_src(srcs, t, tr) -> str:
    return ", ".join(f"{s} r{sr}" for s, sr in srcs) + f" → {t} r{tr}"


def _paired(w: _World, ds: str, atk: str, a: str, b: str, src_a: Src, src_b: Src) -> dict | None:
    """Per-image rates of both sides on their common images: ``adv_a``, ``adv_b``, ``cl_a``, ``cl_b``
    ([target replicas, images]), with the ``plan`` (replica, sources a, sources b) and ``eps``."""
    trs = sorted(w.target_replicas(ds, atk, a) & w.target_replicas(ds, atk, b))
    plan = []
    for tr in trs:
        sa, sb = src_a(tr), src_b(tr)
        if sa and sb and (ds, a, tr) in w.clean and (ds, b, tr) in w.clean:
            plan.append((tr, sa, sb))
    if not plan:
        return None
    eps = set.intersection(*[_eps_of(w, ds, atk, a, tr, sa) & _eps_of(w, ds, atk, b, tr, sb) for tr, sa, sb in plan])
    if not eps:
        return None
    fields, slots = [], []
    for tr, sa, sb in plan:
        slot = {}
        for side, t, srcs in (("a", a, sa), ("b", b, sb)):
            recs = [r for r in w.recs[(ds, atk, t, tr)] if (r["source"], int(r["source_replica"])) in srcs and r["eps"] in eps]
            slot[side] = range(len(fields), len(fields) + len(recs))
            fields += [r["outcomes"] for r in recs]
            slot["clean_" + side] = len(fields)
            fields.append(w.clean[(ds, t, tr)])
        slots.append(slot)
    pos, rates = align(*fields)
    if len(pos) < 2:
        return None
    return {"plan": plan, "eps": eps, "n": len(pos),
            "adv_a": np.stack([np.mean([rates[i] for i in s["a"]], axis=0) for s in slots]),
            "adv_b": np.stack([np.mean([rates[i] for i in s["b"]], axis=0) for s in slots]),
            "cl_a": np.stack([rates[s["clean_a"]] for s in slots]),
            "cl_b": np.stack([rates[s["clean_b"]] for s in slots])}


def compare(w: _World, ds: str, atk: str, a: str, b: str, src_a: Src, src_b: Src, setting: str) -> dict | None:
    """Paired comparison of target ``a`` (attacked by ``src_a``) with target ``b`` (by ``src_b``)."""
    p_ = _paired(w, ds, atk, a, b, src_a, src_b)
    if p_ is None:
        return None
    plan, eps = p_["plan"], p_["eps"]
    adv_a, adv_b, cl_a, cl_b = p_["adv_a"], p_["adv_b"], p_["cl_a"], p_["cl_b"]
    both = S.majority(cl_a.mean(0)) & S.majority(cl_b.mean(0))
    absolute = S.paired_diff_groups(adv_a, adv_b)
    drop = S.paired_diff_groups(adv_a - cl_a, adv_b - cl_b)
    cond = S.paired_diff_groups(adv_a[:, both], adv_b[:, both]) if both.sum() >= 2 else None
    clean = S.paired_diff_groups(cl_a, cl_b)
    p = S.mcnemar(S.majority(cl_a.mean(0)), S.majority(cl_b.mean(0)))
    confounded = p < S.ALPHA
    chosen = cond if confounded else absolute
    notes = []
    if confounded:
        notes.append(f"clean accuracy differs by {_pts(clean.diff)} {_ci(clean)} points (McNemar p = {p:.2g}): "
                     "verdict from conditional robustness")
    if len(plan) > 1:
        per = [S.paired_diff(x, y).diff for x, y in zip(adv_a, adv_b)]
        notes.append("per target replica: " + ", ".join(f"r{tr} {_pts(d)}" for (tr, _, _), d in zip(plan, per)))
    verdict = "inconclusive" if chosen is None else {1: "supported", -1: "contradicted", 0: "inconclusive"}[chosen.side()]
    return {"dataset": ds, "attack": atk, "setting": setting, "a_name": a, "b_name": b,
            "a_src": "; ".join(_fmt_src(sa, a, tr) for tr, sa, _ in plan),
            "b_src": "; ".join(_fmt_src(sb, b, tr) for tr, _, sb in plan),
            "eps": sorted(eps), "n": int(p_["n"]), "n_conditional": int(both.sum()),
            "a": float(adv_a.mean()), "b": float(adv_b.mean()),
            "clean_a": float(cl_a.mean()), "clean_b": float(cl_b.mean()),
            "absolute": absolute.as_dict(), "drop": drop.as_dict(), "clean": clean.as_dict(), "clean_p": p,
            "conditional": None if cond is None else cond.as_dict(),
            "metric": "conditional" if confounded else "absolute",
            "diff": None if chosen is None else chosen.diff, "low": None if chosen is None else chosen.low,
            "high": None if chosen is None else chosen.high, "verdict": verdict, "note": "; ".join(notes)}


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _ci(d) -> str:
    if isinstance(d, dict):
        return f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    return f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


# ---- the claims ----------------------------------------------------------------------------------

def _settings(w: _World, ds: str, atk: str, members):
    """(label, rule: member -> Src): white-box, black-box, then transfer from each source model that
    is none of ``members`` (the same adversarial sets for every member, independent replicas only)."""
    yield "white-box", lambda m: w.whitebox(ds, atk, m)
    yield "black-box", lambda m: w.blackbox(ds, atk, m)
    for src in sorted(w.sources[(ds, atk)] - set(members)):
        f = w.transfer(ds, atk, src, tuple(members))
        yield f"transfer from {src}", lambda m, f=f: f


def _pairs_compared(w: _World, pairs_of: Callable[[str], list]) -> list[dict]:
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


def _claim1(w: _World) -> list[dict]:
    out = []
    for ds in w.datasets:
        for atk in sorted(w.attacks[ds]):
            for s in w.models(ds, SNN_KINDS):
                for a in w.models(ds, ("ann",)):
                    c = compare(w, ds, atk, s, a, w.blackbox(ds, atk, s), w.blackbox(ds, atk, a), "black-box")
                    if c:
                        out.append(c)
    return out


def _claim2(w: _World) -> list[dict]:
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


def _sweep_groups(w: _World, ds: str, param: str, kinds: tuple) -> list[list[str]]:
    """Models of ``kinds`` that differ only in ``param`` (one sweep from one parent), sorted by it."""
    fixed = ("kind", "arch", "neuron", "encoder", "base", "parent", "leak", "timesteps")
    groups = defaultdict(list)
    for (d, name), info in w.info.items():
        if d == ds and info.get("kind") in kinds and info.get(param) is not None:
            groups[tuple(info.get(f) for f in fixed if f != param)].append(name)
    return [sorted(v, key=lambda n: (w.info[(ds, n)][param], n)) for v in groups.values()
            if len({w.info[(ds, n)][param] for n in v}) >= 2]


def _sweep_claim(w: _World, param: str, label: str, kinds: tuple) -> list[dict]:
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


def _ancestor_pairs(w: _World, ds: str):
    for s in w.models(ds, ("snn",)):
        for c in w.chain(ds, s)[1:]:
            if w.kind(ds, c) == "convert":
                yield s, c, ""
                break


def _if_lif_pairs(w: _World, ds: str):
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
    w = _World(data)
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


def _verdict(c: dict, comps: list[dict], why: str, w: _World) -> dict:
    base = {"id": c["id"], "claim": c["claim"], "mirrors": c["mirrors"], "comparisons": comps}
    if not comps:
        return dict(base, verdict="not measured", numbers=why, differs="")
    k = {v: sum(x["verdict"] == v for x in comps) for v in VERDICTS}
    verdict = ("supported" if k["supported"] and not k["contradicted"] else
               "contradicted" if k["contradicted"] and not k["supported"] else "inconclusive")
    diffs = [x["diff"] for x in comps if x["diff"] is not None]
    hw = [(x["high"] - x["low"]) / 2 for x in comps if x["diff"] is not None]
    nums = (f"{k['supported']} supported, {k['contradicted']} contradicted, {k['inconclusive']} inconclusive "
            f"of {len(comps)} comparisons")
    if diffs:
        nums += (f"; diff {100 * min(diffs):+.1f} to {100 * max(diffs):+.1f} points, CI half-width ≤ "
                 f"{100 * max(hw):.1f}")
    conf = sum(x["metric"] == "conditional" for x in comps)
    if conf:
        nums += f"; {conf} judged on conditional robustness (clean accuracies differ)"
    return dict(base, verdict=verdict, numbers=nums, differs=_differs(c, comps, w))


def _span(n: list[int]) -> str:
    return str(n[0]) if n[0] == n[-1] else f"{n[0]}–{n[-1]}"


def _differs(c: dict, comps: list[dict], w: _World) -> str:
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

def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _d(d: dict | None) -> str:
    return "–" if d is None else f"{_pts(d['diff'])} {_ci(d)}"


def claims_md(claims: list[dict]) -> str:
    lines = ["# The studies' claims on measured numbers\n\n",
             ("Each comparison pairs side a (the side the claim calls more robust) with side b on the same "
             "test images (repeats, eps > 0 and sources averaged per image first). Differences a − b in "
             "points with a seeded paired-bootstrap 95 % CI over images "
             f"({S.N_RESAMPLES} resamples): *absolute* adversarial accuracy; *drop* = clean − adversarial "
             "(b's drop − a's); *conditional* = fraction of the images both classify correctly when clean "
             "that stay correct. The verdict uses the conditional metric when McNemar's test says the clean "
             "accuracies differ (p < 0.05), else the absolute one: supported when the CI lies above 0, "
             "contradicted when below, inconclusive otherwise. Sources never share the target's replica "
             "chain (a model and the models made from it, same replica). Definitions: "
             "`spkrobust.claims`.\n\n")]
    lines.append(_md_table(["#", "claim", "verdict", "numbers"],
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
                         f"{hb}: {x['b_src']}", f"{100 * x['b']:.1f}", _d(x["absolute"]), _d(x["drop"]),
                         _d(x["conditional"]) + f" (n={x['n_conditional']})", _d(x["clean"]),
                         x["metric"], f"**{x['verdict']}**", x["n"],
                         ", ".join(f"{255 * e:g}/255" for e in x["eps"]), x["note"]])
        lines.append(_md_table(["dataset", "attack", "setting", "a (sources → target)", "a adv %",
                                "b (sources → target)", "b adv %", "absolute", "drop", "conditional",
                                "clean diff", "verdict from", "verdict", "images", "eps", "notes"], rows))
    return "".join(lines)


# ---- for the accuracy-vs-eps plot ----------------------------------------------------------------

def conditional_by_eps(data: Any, ds: str, atk: str, target: str, setting: str) -> dict[float, float]:
    """eps -> the fraction of the images ``target`` classifies correctly when clean (majority of
    repeats) that stay correct under ``setting`` (records of every target/source replica pooled)."""
    acc: dict[float, list] = defaultdict(list)
    clean = {(c["dataset"], c["model"], int(c["replica"])): c.get("outcomes") for c in getattr(data, "clean", []) or []}
    for r in getattr(data, "records", []) or []:
        if (r["dataset"], r["attack"], r["target"], r.get("setting")) != (ds, atk, target, setting):
            continue
        cf = clean.get((ds, target, int(r["target_replica"])))
        if cf is None or r.get("outcomes") is None:
            continue
        _, (adv, cl) = align(r["outcomes"], cf)
        ok = S.majority(cl)
        if ok.any():
            acc[r["eps"]].append(float(adv[ok].mean()))
    return {e: float(np.mean(v)) for e, v in acc.items()}
