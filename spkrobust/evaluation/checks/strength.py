"""Checks that the attacks are as strong as they should be: iterative ≥ single-step, large eps → chance,
the adaptive ensemble not far below the rest and never above any of them, black-box and noise weaker
than white-box."""
from __future__ import annotations

import math
from collections import defaultdict

from spkrobust.config.vocab import NON_ATTACK_TYPES
from spkrobust.evaluation.checks.base import (ATTACK_SLACK, CHANCE_TOL, ENSEMBLE_DROP_MARGIN, ITERATIVE, LARGE_EPS,
                                              SINGLE_STEP, adv, by_cell, entry, is_noise, pc, pp, t995, tol,
                                              verdict, who)


def check_iterative(recs: list[dict]) -> list[dict]:
    wb = [r for r in recs if r["setting"] == "white-box" and r["eps"] > 0]
    cells = by_cell(wb)
    groups = defaultdict(list)
    for (ds, s, sr, t, tr, e), by in cells.items():
        singles = [r for ty in SINGLE_STEP for r in by.get(ty, [])]
        if not singles:
            continue
        for ty in ITERATIVE:
            for it in by.get(ty, []):
                for ss in singles:
                    a, b = adv(it), adv(ss)
                    excess = (a.mean - b.mean) - tol(a, b, ATTACK_SLACK)
                    groups[(ds, it["attack"], s, sr)].append((excess, it, ss))
    has_it = {(r["dataset"], r["attack"], r["source"], r["source_replica"]) for r in wb if r["_type"] in ITERATIVE}
    out = []
    for key in sorted(has_it):
        ds, atk, s, sr = key
        items = groups.get(key)
        if not items:
            out.append(entry("iterative_ge_single_step", "not_measured",
                              "no white-box single-step (fgsm/rfgsm) record at the same eps",
                              dataset=ds, attack=atk, source=who(s, sr)))
            continue
        out.append(verdict(
            "iterative_ge_single_step", items,
            lambda bad, n=len(items), atk=atk: f"{len(bad)}/{n} comparisons: iterative weaker than single-step: " + "; ".join(
                f"eps {it['eps']:.4g}: {atk} {pc(it['adv_acc'])} vs {ss['attack']} {pc(ss['adv_acc'])}"
                for _, it, ss in bad[:3]),
            lambda items: f"{len(items)} white-box comparison(s); iterative at most "
                          f"{pp(max(max(it['adv_acc'] - ss['adv_acc'] for _, it, ss in items), 0.0))} weaker",
            dataset=ds, attack=atk, source=who(s, sr)))
    return out


def _num_classes(r: dict, models: list[dict] | None) -> int | None:
    if r.get("num_classes"):
        return int(r["num_classes"])
    for m in models or []:
        if m.get("num_classes") and m.get("dataset") == r["dataset"] and m.get("model") == r["target"]:
            return int(m["num_classes"])
    return None


def check_large_eps(recs: list[dict], models: list[dict] | None = None) -> list[dict]:
    wb = [r for r in recs if r["setting"] == "white-box"]
    by = defaultdict(list)
    for r in wb:
        by[(r["dataset"], r["source"], r["source_replica"])].append(r)
    out = []
    if not by:
        return [entry("large_eps_to_chance", "not_measured", "no white-box records")]
    for (ds, s, sr), rs in sorted(by.items()):
        its = [r for r in rs if r["_type"] in ITERATIVE]
        if not its:
            out.append(entry("large_eps_to_chance", "not_measured", "no white-box iterative attack (pgd/eotpgd/apgd)",
                              dataset=ds, source=who(s, sr)))
            continue
        emax = max(r["eps"] for r in its)
        if emax < LARGE_EPS:
            out.append(entry("large_eps_to_chance", "not_measured",
                              f"largest eps {emax:.4g} < {LARGE_EPS} (pixel units); add e.g. eps 0.3 to test it",
                              dataset=ds, source=who(s, sr)))
            continue
        best = min((r for r in its if r["eps"] == emax), key=lambda r: r["adv_acc"])
        nc = _num_classes(best, models)
        if nc is None:
            out.append(entry("large_eps_to_chance", "not_measured", f"number of classes of {ds} unknown",
                              dataset=ds, source=who(s, sr)))
            continue
        chance = 1.0 / nc
        a = adv(best)
        limit = chance + CHANCE_TOL + (t995(a.reps - 1) if a.reps > 1 else 2.576) * math.sqrt(a.se2())
        clean = best.get("clean_acc")
        if clean is not None and clean <= limit:
            out.append(entry("large_eps_to_chance", "not_measured",
                              f"clean accuracy {pc(clean)} is already near chance {pc(chance)}",
                              dataset=ds, source=who(s, sr), attack=best["attack"]))
            continue
        status = "ok" if a.mean <= limit else "flag"
        out.append(entry("large_eps_to_chance", status,
                          f"{best['attack']} at eps {emax:.4g}: {pc(a.mean)} (chance {pc(chance)}, limit {pc(limit)})",
                          dataset=ds, source=who(s, sr), attack=best["attack"]))
    return out


def _white_box_by_eps(recs: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """The white-box attack records (noise left out) per (dataset, source, source replica, eps), sorted."""
    cells = defaultdict(list)
    for r in recs:
        if r["setting"] == "white-box" and not is_noise(r):
            cells[(r["dataset"], r["source"], r["source_replica"], r["eps"])].append(r)
    return sorted(cells.items())


def check_ensemble_drop(recs: list[dict], margin: float = ENSEMBLE_DROP_MARGIN) -> list[dict]:
    out = []
    for (ds, s, sr, e), rs in _white_box_by_eps(recs):
        ens = [r for r in rs if r["_type"] == "ensemble"]
        others = [r for r in rs if r["_type"] != "ensemble"]
        if not ens or not others:
            continue
        best = min(others, key=lambda r: r["adv_acc"])
        for r in ens:
            drop = best["adv_acc"] - r["adv_acc"]
            out.append(entry("ensemble_drop", "flag" if drop > margin else "ok",
                              f"{best['attack']} {pc(best['adv_acc'])} -> {r['attack']} {pc(r['adv_acc'])} "
                              f"at eps {e:.4g}: drop {pp(drop)} (margin {pp(margin)})",
                              dataset=ds, source=who(s, sr), target=who(s, sr), attack=r["attack"]))
    return out


def check_ensemble_not_weaker(recs: list[dict]) -> list[dict]:
    """The per-sample worst case over its members can only be as strong as each of them: an ``ensemble``
    leaving a higher white-box accuracy than another attack of the same cell (beyond the band) means its
    members, or its judgement of a Poisson model's fooling draws, lost what that attack found."""
    out = []
    for (ds, s, sr, e), rs in _white_box_by_eps(recs):
        others = [r for r in rs if r["_type"] != "ensemble"]
        for ens in (r for r in rs if r["_type"] == "ensemble"):
            # rounded: one image above at one point of slack is inside the band, whatever the floats say
            items = [(round((adv(ens).mean - adv(o).mean) - tol(adv(ens), adv(o), ATTACK_SLACK), 9), o)
                     for o in others]
            if not items:
                continue
            out.append(verdict(
                "ensemble_not_weaker", items,
                lambda bad, ens=ens, e=e: f"at eps {e:.4g} {ens['attack']} {pc(ens['adv_acc'])} is above " + "; ".join(
                    f"{o['attack']} {pc(o['adv_acc'])}" for _, o in bad),
                lambda ok, ens=ens, e=e: f"at eps {e:.4g} {ens['attack']} {pc(ens['adv_acc'])} is not above any other attack "
                f"(" + ", ".join(f"{o['attack']} {pc(o['adv_acc'])}" for _, o in ok) + ") beyond the band",
                dataset=ds, source=who(s, sr), target=who(s, sr), attack=ens["attack"]))
    return out


def check_blackbox(recs: list[dict]) -> list[dict]:
    wbs = {(r["dataset"], r["attack"], r["target"], r["target_replica"], r["eps"]): r
           for r in recs if r["setting"] == "white-box"}
    groups = defaultdict(list)
    for r in recs:
        if r["setting"] != "black-box" or r["eps"] == 0 or is_noise(r):
            continue
        w = wbs.get((r["dataset"], r["attack"], r["target"], r["target_replica"], r["eps"]))
        if w is None:
            continue
        b, a = adv(r), adv(w)
        excess = (a.mean - b.mean) - tol(a, b, ATTACK_SLACK)
        groups[(r["dataset"], r["attack"], r["target"], r["target_replica"])].append((excess, r, w))
    out = []
    for (ds, atk, t, tr), items in sorted(groups.items()):
        out.append(verdict(
            "blackbox_not_stronger_than_whitebox", items,
            lambda bad, n=len(items): f"{len(bad)}/{n} black-box sets beat the white-box attack (masked gradients?): "
            + "; ".join(f"eps {r['eps']:.4g}: black-box from {who(r['source'], r['source_replica'])} "
                        f"{pc(r['adv_acc'])} < white-box {pc(w['adv_acc'])}" for _, r, w in bad[:3]),
            lambda items: f"{len(items)} comparison(s); black-box at most "
                          f"{pp(max(max(w['adv_acc'] - r['adv_acc'] for _, r, w in items), 0.0))} stronger",
            dataset=ds, attack=atk, target=who(t, tr)))
    if not out:
        out.append(entry("blackbox_not_stronger_than_whitebox", "not_measured",
                          "no black-box record with a white-box counterpart (needs replicas >= 2)"))
    return out


def _noise_margin(items: list[tuple]) -> str:
    gap = min(nz["adv_acc"] - r["adv_acc"] for _, r, nz in items)
    if gap >= 0:
        return f"{len(items)} eps; attack beats noise by at least {pp(gap)}"
    return f"{len(items)} eps; attack within tolerance of noise (worst {pp(gap)})"


def check_noise(recs: list[dict]) -> list[dict]:
    wb = [r for r in recs if r["setting"] == "white-box" and r["eps"] > 0]
    cells = by_cell(wb)
    groups = defaultdict(list)
    for (ds, s, sr, t, tr, e), by in cells.items():
        for nz in (r for ty in NON_ATTACK_TYPES for r in by.get(ty, [])):
            for ty, rs in by.items():
                if ty in NON_ATTACK_TYPES:
                    continue
                for r in rs:
                    n_, a = adv(nz), adv(r)
                    excess = (a.mean - n_.mean) - tol(a, n_, ATTACK_SLACK)
                    groups[(ds, r["attack"], t, tr)].append((excess, r, nz))
    out = []
    for (ds, atk, t, tr), items in sorted(groups.items()):
        out.append(verdict(
            "noise_weaker_than_attack", items,
            lambda bad, n=len(items), atk=atk: f"{len(bad)}/{n} eps: random noise hurts more than the attack: " + "; ".join(
                f"eps {r['eps']:.4g}: noise {pc(nz['adv_acc'])} < {atk} {pc(r['adv_acc'])}" for _, r, nz in bad[:3]),
            _noise_margin, dataset=ds, attack=atk, target=who(t, tr)))
    if not out:
        out.append(entry("noise_weaker_than_attack", "not_measured",
                          "no white-box noise baseline at the same eps (add an attack {type: noise})"))
    return out
