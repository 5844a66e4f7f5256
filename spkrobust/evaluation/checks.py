"""Sanity flags for a robustness evaluation, computed from the records (DESIGN §6).

``run_checks(records, clean=None, models=None)`` returns a list of
``{name, status: ok|flag|not_measured, dataset, source, target, attack, detail}`` (the keys that do
not apply are left out). ``flag`` means "look at this": the numbers are inconsistent with a working
attack/evaluation beyond the stated tolerance; it is not proof of a bug.

Tolerances. Two accuracies ``a`` and ``b`` (means of ``R_a`` and ``R_b`` repeats with sample std
``s_a``, ``s_b``) are "different" when ``|a - b| > t · sqrt(s_a²/R_a + s_b²/R_b) + slack``, with
``t`` the two-sided 99 % Student quantile for ``R_a + R_b - 2`` degrees of freedom (``t`` = 4.60
for 3 + 3 repeats; 2.58 for many). A stochastic accuracy measured once has no std; it is then given
the binomial bound ``sqrt(p(1 - p)/n)`` (the spread of a per-image coin flip). ``slack`` is one
image (``1/n``) where both sides are the same inputs (eps = 0 vs clean) and ``ATTACK_SLACK`` (one
percentage point) where two different adversarial sets are compared (random starts, per-eps
randomness). This is a screening band, not a significance test with a controlled error rate.

Checks (level of aggregation in brackets):

* ``eps0_equals_clean`` [target] — every eps = 0 record equals the target's clean accuracy;
* ``monotone_in_eps`` [attack × target] — adversarial accuracy does not rise with eps (each point
  compared with the lowest accuracy at any smaller eps, the eps = 0 record included);
* ``iterative_ge_single_step`` [iterative attack × source, white-box] — PGD/EOT-PGD/APGD are at least
  as strong as FGSM/R-FGSM at equal eps (in transfer, iterative attacks may legitimately be weaker);
* ``large_eps_to_chance`` [source, white-box] — at the largest eps (≥ ``LARGE_EPS``), the strongest
  iterative attack drives accuracy to ≤ chance + ``CHANCE_TOL``; not measured below ``LARGE_EPS``;
* ``blackbox_not_stronger_than_whitebox`` [attack × target] — an independently trained copy's
  adversarial set does not hurt the target more than the target's own (else its gradients are masked);
* ``noise_weaker_than_attack`` [attack × target, white-box] — random sign noise at eps hurts less
  than the attack at eps;
* ``zero_gradient_fraction`` [source × attack] — at most ``ZERO_GRAD_MAX`` of the inputs have an
  all-zero input gradient;
* ``ensemble_drop`` [source × eps, white-box, only where an ``ensemble`` attack ran] — the adaptive
  ensemble lowers accuracy by at most ``ENSEMBLE_DROP_MARGIN`` below the strongest other attack (else
  the single-estimator attacks overestimate the model's robustness);
* ``stochastic_target`` [target, from the clean records] — the forward pass run twice differs iff the
  model declares itself stochastic; reports the spread.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from spkrobust.config.expand import parse_eps

ATTACK_SLACK = 0.01   # accuracy fraction allowed between two different adversarial sets
CHANCE_TOL = 0.05     # large-eps accuracy may exceed chance by this much
LARGE_EPS = 0.25      # pixel units: below this the large-eps check is not measured
ZERO_GRAD_MAX = 0.05  # fraction of inputs with an all-zero input gradient
ENSEMBLE_DROP_MARGIN = 0.05  # accuracy fraction the ensemble may take below the other attacks' best
ITERATIVE = ("pgd", "eotpgd", "apgd", "apgdt", "sapgd")
SINGLE_STEP = ("fgsm", "rfgsm")
GRADIENT = ITERATIVE + SINGLE_STEP
NOISE = "noise"
_CLASSES = {"fashion_mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
# two-sided 99 % Student t quantiles
_T995 = {1: 63.657, 2: 9.925, 3: 5.841, 4: 4.604, 5: 4.032, 6: 3.707, 7: 3.499, 8: 3.355, 9: 3.250,
         10: 3.169, 12: 3.055, 15: 2.947, 20: 2.845, 30: 2.750, 60: 2.660}


def _t995(df: int) -> float:
    if df <= 0:
        return _T995[1]
    for k in sorted(_T995):
        if df <= k:
            return _T995[k]
    return 2.576


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _pp(v: float) -> str:
    return f"{100 * v:.2f}pp"


def _atype(r: dict) -> str:
    t = r.get("attack_type") or (r.get("attack_params") or {}).get("type") or r.get("attack")
    return str(t)


def _who(name: Any, rep: Any) -> str:
    return f"{name} r{int(rep)}" if rep is not None else str(name)


class _Acc:
    """An accuracy with its repeat noise: mean, std, repeats, n, stochastic."""

    def __init__(self, mean, std, reps, n, stochastic):
        self.mean = float(mean)
        self.reps = max(1, int(reps or 1))
        self.n = max(1, int(n or 1))
        std = float(std or 0.0)
        if stochastic and self.reps < 2 and std == 0.0:  # spread not measured: binomial bound
            std = math.sqrt(max(self.mean * (1 - self.mean), 1.0 / self.n) / self.n)
        self.std = std

    def se2(self) -> float:
        return self.std ** 2 / self.reps


def _tol(a: _Acc, b: _Acc, slack: float) -> float:
    se = math.sqrt(a.se2() + b.se2())
    return (_t995(a.reps + b.reps - 2) * se if se > 0 else 0.0) + slack


def _adv(r: dict) -> _Acc:
    return _Acc(r["adv_acc"], r.get("adv_acc_std"), r.get("repeats"), r.get("n"), r.get("stochastic"))


def _norm(records: list[dict]) -> list[dict]:
    out = []
    for r in records or []:
        if r.get("adv_acc") is None:
            continue
        r = dict(r)
        r["eps"] = parse_eps(r["eps"], "eps")
        r["source_replica"] = int(r.get("source_replica", 1))
        r["target_replica"] = int(r.get("target_replica", 1))
        r["_type"] = _atype(r)
        r.setdefault("dataset", "")
        if not r.get("setting"):
            same = r["source"] == r["target"]
            r["setting"] = ("white-box" if r["source_replica"] == r["target_replica"] else "black-box") \
                if same else "transfer"
        out.append(r)
    return out


def _entry(name, status, detail, **where) -> dict:
    e = {"name": name, "status": status}
    e.update({k: v for k, v in where.items() if v is not None})
    e["detail"] = detail
    return e


# ---- individual checks --------------------------------------------------------------------------

def check_eps0(recs: list[dict]) -> list[dict]:
    zero = [r for r in recs if r["eps"] == 0.0]
    if not zero:
        return [_entry("eps0_equals_clean", "not_measured", "no eps = 0 records (add 0 to the eps list)")]
    by = defaultdict(list)
    for r in zero:
        by[(r["dataset"], r["target"], r["target_replica"])].append(r)
    out = []
    for (ds, t, tr), rs in sorted(by.items()):
        worst, n_ok, missing = None, 0, 0
        for r in rs:
            if r.get("clean_acc") is None:
                missing += 1
                continue
            a = _adv(r)
            c = _Acc(r["clean_acc"], r.get("clean_acc_std"), r.get("clean_repeats", r.get("repeats")), r.get("n"),
                     r.get("stochastic"))
            tol = _tol(a, c, 1.0 / a.n)
            excess = abs(a.mean - c.mean) - tol
            if excess <= 1e-12:
                n_ok += 1
            if worst is None or excess > worst[0]:
                worst = (excess, r, a, c, tol)
        if worst is None:
            out.append(_entry("eps0_equals_clean", "not_measured", "records carry no clean accuracy",
                              dataset=ds, target=_who(t, tr)))
            continue
        ex, r, a, c, tol = worst
        status = "flag" if ex > 1e-12 else "ok"
        out.append(_entry(
            "eps0_equals_clean", status,
            f"{n_ok}/{len(rs) - missing} eps=0 sets within tolerance; worst: {r['attack']} from "
            f"{_who(r['source'], r['source_replica'])}: adv {_pct(a.mean)} vs clean {_pct(c.mean)} "
            f"(|diff| {_pp(abs(a.mean - c.mean))}, tol {_pp(tol)})", dataset=ds, target=_who(t, tr)))
    return out


def check_monotone(recs: list[dict]) -> list[dict]:
    series = defaultdict(list)
    for r in recs:
        series[(r["dataset"], r["attack"], r["target"], r["target_replica"], r["source"], r["source_replica"])].append(r)
    groups = defaultdict(list)  # (dataset, attack, target) -> violations / counts
    for (ds, atk, t, tr, s, sr), rs in series.items():
        rs = sorted(rs, key=lambda r: r["eps"])
        if len(rs) < 2:
            groups[(ds, atk, t, tr)].append(None)
            continue
        worst = None
        for j in range(1, len(rs)):
            bj = _adv(rs[j])
            # lowest accuracy at any smaller eps
            i = min(range(j), key=lambda k: rs[k]["adv_acc"])
            bi = _adv(rs[i])
            excess = (bj.mean - bi.mean) - _tol(bj, bi, ATTACK_SLACK)
            if worst is None or excess > worst[0]:
                worst = (excess, rs[i], rs[j], bj.mean - bi.mean)
        groups[(ds, atk, t, tr)].append((worst, _who(s, sr)))
    out = []
    for (ds, atk, t, tr), items in sorted(groups.items()):
        measured = [x for x in items if x is not None]
        if not measured:
            out.append(_entry("monotone_in_eps", "not_measured", "fewer than two eps per source",
                              dataset=ds, attack=atk, target=_who(t, tr)))
            continue
        bad = sorted((x for x in measured if x[0][0] > 0), key=lambda x: -x[0][0])
        if bad:
            det = "; ".join(f"from {src}: {_pct(ri['adv_acc'])} at eps {ri['eps']:.4g} -> {_pct(rj['adv_acc'])} at "
                            f"eps {rj['eps']:.4g} (+{_pp(d)})" for (ex, ri, rj, d), src in bad[:3])
            out.append(_entry("monotone_in_eps", "flag",
                              f"{len(bad)}/{len(measured)} sources rise with eps beyond tolerance: {det}",
                              dataset=ds, attack=atk, target=_who(t, tr)))
        else:
            mx = max(x[0][3] for x in measured)
            out.append(_entry("monotone_in_eps", "ok",
                              f"{len(measured)} source(s); largest rise {_pp(max(mx, 0.0))} (within tolerance)",
                              dataset=ds, attack=atk, target=_who(t, tr)))
    return out


def _by_cell(recs):
    """(dataset, source, sr, target, tr, eps) -> {attack type: [records]}."""
    cells = defaultdict(lambda: defaultdict(list))
    for r in recs:
        cells[(r["dataset"], r["source"], r["source_replica"], r["target"], r["target_replica"], r["eps"])][r["_type"]].append(r)
    return cells


def check_iterative(recs: list[dict]) -> list[dict]:
    wb = [r for r in recs if r["setting"] == "white-box" and r["eps"] > 0]
    cells = _by_cell(wb)
    groups = defaultdict(list)
    for (ds, s, sr, t, tr, e), by in cells.items():
        singles = [r for ty in SINGLE_STEP for r in by.get(ty, [])]
        if not singles:
            continue
        for ty in ITERATIVE:
            for it in by.get(ty, []):
                for ss in singles:
                    a, b = _adv(it), _adv(ss)
                    excess = (a.mean - b.mean) - _tol(a, b, ATTACK_SLACK)
                    groups[(ds, it["attack"], s, sr)].append((excess, it, ss))
    has_it = {(r["dataset"], r["attack"], r["source"], r["source_replica"]) for r in wb if r["_type"] in ITERATIVE}
    out = []
    for key in sorted(has_it):
        ds, atk, s, sr = key
        items = groups.get(key)
        if not items:
            out.append(_entry("iterative_ge_single_step", "not_measured",
                              "no white-box single-step (fgsm/rfgsm) record at the same eps",
                              dataset=ds, attack=atk, source=_who(s, sr)))
            continue
        bad = sorted((x for x in items if x[0] > 0), key=lambda x: -x[0])
        if bad:
            det = "; ".join(f"eps {it['eps']:.4g}: {atk} {_pct(it['adv_acc'])} vs {ss['attack']} {_pct(ss['adv_acc'])}"
                            for _, it, ss in bad[:3])
            out.append(_entry("iterative_ge_single_step", "flag",
                              f"{len(bad)}/{len(items)} comparisons: iterative weaker than single-step: {det}",
                              dataset=ds, attack=atk, source=_who(s, sr)))
        else:
            gap = max(it["adv_acc"] - ss["adv_acc"] for _, it, ss in items)
            out.append(_entry("iterative_ge_single_step", "ok",
                              f"{len(items)} white-box comparison(s); iterative at most {_pp(max(gap, 0.0))} weaker",
                              dataset=ds, attack=atk, source=_who(s, sr)))
    return out


def _num_classes(r: dict, models: list[dict] | None) -> int | None:
    if r.get("num_classes"):
        return int(r["num_classes"])
    for m in models or []:
        if m.get("num_classes") and m.get("dataset") == r["dataset"] and m.get("model") == r["target"]:
            return int(m["num_classes"])
    return _CLASSES.get(str(r["dataset"]))


def check_large_eps(recs: list[dict], models: list[dict] | None = None) -> list[dict]:
    wb = [r for r in recs if r["setting"] == "white-box"]
    by = defaultdict(list)
    for r in wb:
        by[(r["dataset"], r["source"], r["source_replica"])].append(r)
    out = []
    if not by:
        return [_entry("large_eps_to_chance", "not_measured", "no white-box records")]
    for (ds, s, sr), rs in sorted(by.items()):
        its = [r for r in rs if r["_type"] in ITERATIVE]
        if not its:
            out.append(_entry("large_eps_to_chance", "not_measured", "no white-box iterative attack (pgd/eotpgd/apgd)",
                              dataset=ds, source=_who(s, sr)))
            continue
        emax = max(r["eps"] for r in its)
        if emax < LARGE_EPS:
            out.append(_entry("large_eps_to_chance", "not_measured",
                              f"largest eps {emax:.4g} < {LARGE_EPS} (pixel units); add e.g. eps 0.3 to test it",
                              dataset=ds, source=_who(s, sr)))
            continue
        best = min((r for r in its if r["eps"] == emax), key=lambda r: r["adv_acc"])
        nc = _num_classes(best, models)
        if nc is None:
            out.append(_entry("large_eps_to_chance", "not_measured", f"number of classes of {ds} unknown",
                              dataset=ds, source=_who(s, sr)))
            continue
        chance = 1.0 / nc
        a = _adv(best)
        limit = chance + CHANCE_TOL + (_t995(a.reps - 1) if a.reps > 1 else 2.576) * math.sqrt(a.se2())
        clean = best.get("clean_acc")
        if clean is not None and clean <= limit:
            out.append(_entry("large_eps_to_chance", "not_measured",
                              f"clean accuracy {_pct(clean)} is already near chance {_pct(chance)}",
                              dataset=ds, source=_who(s, sr), attack=best["attack"]))
            continue
        status = "ok" if a.mean <= limit else "flag"
        out.append(_entry("large_eps_to_chance", status,
                          f"{best['attack']} at eps {emax:.4g}: {_pct(a.mean)} (chance {_pct(chance)}, limit {_pct(limit)})",
                          dataset=ds, source=_who(s, sr), attack=best["attack"]))
    return out


def check_blackbox(recs: list[dict]) -> list[dict]:
    wbs = {(r["dataset"], r["attack"], r["target"], r["target_replica"], r["eps"]): r
           for r in recs if r["setting"] == "white-box"}
    groups = defaultdict(list)
    for r in recs:
        if r["setting"] != "black-box" or r["eps"] == 0 or r["_type"] == NOISE:
            continue
        w = wbs.get((r["dataset"], r["attack"], r["target"], r["target_replica"], r["eps"]))
        if w is None:
            continue
        b, a = _adv(r), _adv(w)
        excess = (a.mean - b.mean) - _tol(a, b, ATTACK_SLACK)
        groups[(r["dataset"], r["attack"], r["target"], r["target_replica"])].append((excess, r, w))
    out = []
    for (ds, atk, t, tr), items in sorted(groups.items()):
        bad = sorted((x for x in items if x[0] > 0), key=lambda x: -x[0])
        if bad:
            det = "; ".join(f"eps {r['eps']:.4g}: black-box from {_who(r['source'], r['source_replica'])} "
                            f"{_pct(r['adv_acc'])} < white-box {_pct(w['adv_acc'])}" for _, r, w in bad[:3])
            out.append(_entry("blackbox_not_stronger_than_whitebox", "flag",
                              f"{len(bad)}/{len(items)} black-box sets beat the white-box attack (masked gradients?): {det}",
                              dataset=ds, attack=atk, target=_who(t, tr)))
        else:
            gap = max(w["adv_acc"] - r["adv_acc"] for _, r, w in items)
            out.append(_entry("blackbox_not_stronger_than_whitebox", "ok",
                              f"{len(items)} comparison(s); black-box at most {_pp(max(gap, 0.0))} stronger",
                              dataset=ds, attack=atk, target=_who(t, tr)))
    if not out:
        out.append(_entry("blackbox_not_stronger_than_whitebox", "not_measured",
                          "no black-box record with a white-box counterpart (needs replicas >= 2)"))
    return out


def check_noise(recs: list[dict]) -> list[dict]:
    wb = [r for r in recs if r["setting"] == "white-box" and r["eps"] > 0]
    cells = _by_cell(wb)
    groups = defaultdict(list)
    for (ds, s, sr, t, tr, e), by in cells.items():
        for nz in by.get(NOISE, []):
            for ty, rs in by.items():
                if ty == NOISE:
                    continue
                for r in rs:
                    n_, a = _adv(nz), _adv(r)
                    excess = (a.mean - n_.mean) - _tol(a, n_, ATTACK_SLACK)
                    groups[(ds, r["attack"], t, tr)].append((excess, r, nz))
    out = []
    for (ds, atk, t, tr), items in sorted(groups.items()):
        bad = sorted((x for x in items if x[0] > 0), key=lambda x: -x[0])
        if bad:
            det = "; ".join(f"eps {r['eps']:.4g}: noise {_pct(nz['adv_acc'])} < {atk} {_pct(r['adv_acc'])}"
                            for _, r, nz in bad[:3])
            out.append(_entry("noise_weaker_than_attack", "flag",
                              f"{len(bad)}/{len(items)} eps: random noise hurts more than the attack: {det}",
                              dataset=ds, attack=atk, target=_who(t, tr)))
        else:
            gap = min(nz["adv_acc"] - r["adv_acc"] for _, r, nz in items)
            out.append(_entry("noise_weaker_than_attack", "ok",
                              f"{len(items)} eps; attack beats noise by at least {_pp(gap)}" if gap >= 0 else
                              f"{len(items)} eps; attack within tolerance of noise (worst {_pp(gap)})",
                              dataset=ds, attack=atk, target=_who(t, tr)))
    if not out:
        out.append(_entry("noise_weaker_than_attack", "not_measured",
                          "no white-box noise baseline at the same eps (add an attack {type: noise})"))
    return out


def check_zero_grad(recs: list[dict]) -> list[dict]:
    sets = {}
    for r in recs:
        if r["_type"] in GRADIENT:
            sets[(r["dataset"], r["source"], r["source_replica"], r["attack"], r["eps"])] = r.get("zero_grad_frac")
    by = defaultdict(list)
    for (ds, s, sr, atk, e), z in sets.items():
        by[(ds, s, sr, atk)].append((e, z))
    out = []
    for (ds, s, sr, atk), vals in sorted(by.items()):
        known = [(e, z) for e, z in vals if z is not None]
        if not known:
            out.append(_entry("zero_gradient_fraction", "not_measured", "zero_grad_frac not recorded",
                              dataset=ds, source=_who(s, sr), attack=atk))
            continue
        e, z = max(known, key=lambda v: v[1])
        status = "flag" if z > ZERO_GRAD_MAX else "ok"
        out.append(_entry("zero_gradient_fraction", status,
                          f"max {_pct(z)} of inputs with an all-zero input gradient (at eps {e:.4g}; "
                          f"limit {_pct(ZERO_GRAD_MAX)}) over {len(known)} set(s)",
                          dataset=ds, source=_who(s, sr), attack=atk))
    if not out:
        out.append(_entry("zero_gradient_fraction", "not_measured", "no gradient-based attack records"))
    return out


def check_ensemble_drop(recs: list[dict], margin: float = ENSEMBLE_DROP_MARGIN) -> list[dict]:
    cells = defaultdict(list)
    for r in recs:
        if r["setting"] == "white-box" and r["_type"] != NOISE:
            cells[(r["dataset"], r["source"], r["source_replica"], r["eps"])].append(r)
    out = []
    for (ds, s, sr, e), rs in sorted(cells.items()):
        ens = [r for r in rs if r["_type"] == "ensemble"]
        others = [r for r in rs if r["_type"] != "ensemble"]
        if not ens or not others:
            continue
        best = min(others, key=lambda r: r["adv_acc"])
        for r in ens:
            drop = best["adv_acc"] - r["adv_acc"]
            out.append(_entry("ensemble_drop", "flag" if drop > margin else "ok",
                              f"{best['attack']} {_pct(best['adv_acc'])} -> {r['attack']} {_pct(r['adv_acc'])} "
                              f"at eps {e:.4g}: drop {_pp(drop)} (margin {_pp(margin)})",
                              dataset=ds, source=_who(s, sr), target=_who(s, sr), attack=r["attack"]))
    return out


def check_stochastic(clean: list[dict] | None) -> list[dict]:
    if not clean:
        return [_entry("stochastic_target", "not_measured", "no clean-accuracy records given")]
    out = []
    for c in sorted(clean, key=lambda c: (str(c.get("dataset")), str(c.get("model")), int(c.get("replica") or 0))):
        who = _who(c.get("model", c.get("target")), c.get("replica", c.get("target_replica")))
        rc = c.get("repeat_check")
        declared = bool(c.get("stochastic"))
        ds = c.get("dataset")
        if not rc:
            out.append(_entry("stochastic_target", "not_measured", "the clean record has no two-pass repeat check",
                              dataset=ds, target=who))
            continue
        spread = (f"two passes: {_pct(rc.get('pred_disagree_frac'))} of predictions differ, max logit diff "
                  f"{rc.get('logit_max_abs_diff', 0):.3g}; clean {_pct(c.get('clean_acc'))} ± "
                  f"{_pct(c.get('clean_acc_std'))} over {c.get('repeats')} repeat(s)")
        differs = bool(rc.get("differs"))
        if declared and differs:
            status, what = ("flag", "stochastic but evaluated with a single repeat (no spread); ") \
                if int(c.get("repeats") or 1) < 2 else ("ok", "stochastic (declared); ")
        elif not declared and not differs:
            status, what = "ok", "deterministic (declared); "
        elif not declared:
            status, what = "flag", "declared deterministic but the forward pass is random; "
        else:
            status, what = "flag", "declared stochastic but two passes are identical; "
        out.append(_entry("stochastic_target", status, what + spread, dataset=ds, target=who))
    return out


def run_checks(records: list[dict], clean: list[dict] | None = None,
               models: list[dict] | None = None) -> list[dict]:
    """All sanity checks on evaluation records (+ clean records, + model rows for class counts)."""
    recs = _norm(records)
    out = []
    if not recs:
        out.append(_entry("records", "not_measured", "no evaluation records"))
    else:
        out += check_eps0(recs)
        out += check_monotone(recs)
        out += check_iterative(recs) or [_entry("iterative_ge_single_step", "not_measured",
                                                "no white-box iterative attack records")]
        out += check_large_eps(recs, models)
        out += check_blackbox(recs)
        out += check_noise(recs)
        out += check_zero_grad(recs)
        out += check_ensemble_drop(recs)
    out += check_stochastic(clean)
    return out
