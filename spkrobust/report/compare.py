"""Paired comparisons of two targets on per-image outcomes (the claims' and plots' common ground).

:class:`World` indexes ``data.models`` (``models.csv`` rows) and ``data.records``/``data.clean`` (the
raw records of ``records.json``, each with per-image ``outcomes``). :func:`compare` sets side ``a``
against side ``b`` on one dataset and attack; a side is a target attacked by named sets (sources
with replicas). Both sides are paired on the images every record involved covers; an image's rate
is averaged over repeats, the common eps > 0 and the side's sources, then over target replicas.
Metrics, each ``a - b`` with a 95 % CI (:mod:`spkrobust.report.stats`: one target replica, a seeded
paired bootstrap over images; several, a crossed replica x image random-effects t-interval): *absolute*
adversarial accuracy; *drop* (clean - adv, as ``drop_b - drop_a``); *conditional* robustness (on the
images both classify correctly when clean, the fraction kept). If McNemar's test on the clean
outcomes says the clean accuracies differ, the verdict comes from the conditional metric ("clean
accuracy differs by X (CI)"), else from the absolute one: supported / contradicted when the CI lies
above / below 0, inconclusive otherwise; with one target replica the verdict reads "supported (one
training run)" (the CI says nothing of another training).

Independence: a black-box or transfer source never shares the target's replica chain
(:func:`spkrobust.config.expand.shares_weights`): ``ann r1`` never attacks ``snn_bp r1`` (made from
``ann r1``); ``ann r2`` does. Rows name their replicas. ``noise`` attacks are left out.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from spkrobust.report import stats as S
from spkrobust.config.expand import shares_weights
from spkrobust.evaluation.outcomes import align
from spkrobust.config.vocab import NON_ATTACK_TYPES, SNN_KINDS

Src = Callable[[int], list]  # target replica -> [(source, source replica), ...]
ONE_RUN = " (one training run)"  # a verdict's label when it rests on a single trained target replica


def verdict_of(side: int, one_run: bool) -> str:
    """The verdict of a CI on side ``side`` of 0 (+1 above, -1 below, 0 holding it), labelled
    :data:`ONE_RUN` when ``one_run`` (an inconclusive verdict carries no label)."""
    verdict = {1: "supported", -1: "contradicted", 0: "inconclusive"}[side]
    return verdict + ONE_RUN if one_run and side else verdict


def base_verdict(verdict: str) -> str:
    """``verdict`` without its :data:`ONE_RUN` label."""
    return verdict.removesuffix(ONE_RUN)


# ---- the records, indexed ------------------------------------------------------------------------

class World:
    def __init__(self, data: Any):
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
            if r["attack_type"] in NON_ATTACK_TYPES:  # the record's type (spkrobust.evaluation.records)
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
        """Same replica chain (:func:`spkrobust.config.expand.shares_weights`): never an independent source."""
        parent_of = {m: i.get("parent") for (d, m), i in self.info.items() if d == ds}
        return shares_weights(parent_of, s, sr, t, tr)

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


def _paired(w: World, ds: str, atk: str, a: str, b: str, src_a: Src, src_b: Src) -> dict | None:
    """Per-image rates of both sides on their common images: ``adv_a``, ``adv_b``, ``cl_a``, ``cl_b``
    ([target replicas, images]), with the ``plan`` (replica, sources a, sources b), ``eps`` and the
    common image positions ``pos`` (sorted)."""
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
    return {"plan": plan, "eps": eps, "n": len(pos), "pos": pos,
            "adv_a": np.stack([np.mean([rates[i] for i in s["a"]], axis=0) for s in slots]),
            "adv_b": np.stack([np.mean([rates[i] for i in s["b"]], axis=0) for s in slots]),
            "cl_a": np.stack([rates[s["clean_a"]] for s in slots]),
            "cl_b": np.stack([rates[s["clean_b"]] for s in slots])}


def compare(w: World, ds: str, atk: str, a: str, b: str, src_a: Src, src_b: Src, setting: str) -> dict | None:
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
    blocks = _blocks(ds, plan, p_["pos"], adv_a - adv_b, (adv_a - cl_a) - (adv_b - cl_b), both)
    runs = len(plan)
    verdict = verdict_of(0 if chosen is None else chosen.side(), runs == 1)
    if runs == 1:
        notes.append("one training run: the CI covers test images only, not another training of the networks")
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
            "high": None if chosen is None else chosen.high,
            "p_greater": 1.0 if chosen is None else chosen.p_greater,
            "p_less": 1.0 if chosen is None else chosen.p_less,
            "runs": runs, "verdict": verdict, "note": "; ".join(notes), "blocks": blocks}


def _blocks(ds, plan, pos, d_abs, d_drop, both) -> dict:
    """Per metric, the comparison as a :func:`spkrobust.report.stats.pooled_diff` block: per target
    replica and image, its contribution to the mean difference (so a claim can pool comparisons)."""
    reps = [tr for tr, _, _ in plan]
    imgs = [(ds, int(i)) for i in pos]
    out = {m: {"replicas": reps, "images": imgs, "c": d / d.shape[1]}
           for m, d in (("absolute", d_abs), ("drop", d_drop))}
    k = int(both.sum())
    out["conditional"] = None if k < 2 else {"replicas": reps, "images": [x for x, b in zip(imgs, both) if b],
                                             "c": d_abs[:, both] / k}
    return out


def pooled(comps: list[dict]) -> S.Diff | None:
    """The pooled estimate of a claim: the mean of its comparisons' verdict metrics (each
    comparison's ``metric``) with the CI of :func:`spkrobust.report.stats.pooled_diff`."""
    blocks = [x["blocks"][x["metric"]] for x in comps if x.get("blocks") and x["blocks"].get(x["metric"])]
    return S.pooled_diff(blocks) if blocks else None


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def fmt_diff(d: dict | None) -> str:
    """A difference dict (``Diff.as_dict``) as ``+x.x [+lo, +hi]`` points, ``–`` when None."""
    return "–" if d is None else f"{_pts(d['diff'])} {_ci(d)}"


def _ci(d) -> str:
    if isinstance(d, dict):
        return f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    return f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


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


def snn_vs_ann(w: World, setting: str) -> list[dict]:
    """Every SNN target against every ANN target, per dataset and attack, each side attacked by the
    rule of ``setting`` (``white-box``: by itself; ``black-box``: by its other replicas)."""
    rule = {"white-box": w.whitebox, "black-box": w.blackbox}[setting]
    out = []
    for ds in w.datasets:
        for atk in sorted(w.attacks[ds]):
            for s in w.models(ds, SNN_KINDS):
                for a in w.models(ds, ("ann",)):
                    c = compare(w, ds, atk, s, a, rule(ds, atk, s), rule(ds, atk, a), setting)
                    if c:
                        out.append(c)
    return out
