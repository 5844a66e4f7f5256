"""Checks that the numbers agree with each other: eps = 0 is the clean accuracy, accuracy falls with eps."""
from __future__ import annotations

from collections import defaultdict

from spkrobust.evaluation.checks.base import (ATTACK_SLACK, Acc, adv, entry, pc, pp, tol,
                                              who)


def check_eps0(recs: list[dict]) -> list[dict]:
    zero = [r for r in recs if r["eps"] == 0.0]
    if not zero:
        return [entry("eps0_equals_clean", "not_measured", "no eps = 0 records (add 0 to the eps list)")]
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
            a = adv(r)
            c = Acc(r["clean_acc"], r.get("clean_acc_std"), r.get("clean_repeats", r.get("repeats")), r.get("n"),
                     r.get("stochastic"))
            band = tol(a, c, 1.0 / a.n)
            excess = abs(a.mean - c.mean) - band
            if excess <= 1e-12:
                n_ok += 1
            if worst is None or excess > worst[0]:
                worst = (excess, r, a, c, band)
        if worst is None:
            out.append(entry("eps0_equals_clean", "not_measured", "records carry no clean accuracy",
                              dataset=ds, target=who(t, tr)))
            continue
        ex, r, a, c, band = worst
        status = "flag" if ex > 1e-12 else "ok"
        out.append(entry(
            "eps0_equals_clean", status,
            f"{n_ok}/{len(rs) - missing} eps=0 sets within tolerance; worst: {r['attack']} from "
            f"{who(r['source'], r['source_replica'])}: adv {pc(a.mean)} vs clean {pc(c.mean)} "
            f"(|diff| {pp(abs(a.mean - c.mean))}, tol {pp(band)})", dataset=ds, target=who(t, tr)))
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
            bj = adv(rs[j])
            # lowest accuracy at any smaller eps
            i = min(range(j), key=lambda k: rs[k]["adv_acc"])
            bi = adv(rs[i])
            excess = (bj.mean - bi.mean) - tol(bj, bi, ATTACK_SLACK)
            if worst is None or excess > worst[0]:
                worst = (excess, rs[i], rs[j], bj.mean - bi.mean)
        groups[(ds, atk, t, tr)].append((worst, who(s, sr)))
    out = []
    for (ds, atk, t, tr), items in sorted(groups.items()):
        measured = [x for x in items if x is not None]
        if not measured:
            out.append(entry("monotone_in_eps", "not_measured", "fewer than two eps per source",
                              dataset=ds, attack=atk, target=who(t, tr)))
            continue
        bad = sorted((x for x in measured if x[0][0] > 0), key=lambda x: -x[0][0])
        if bad:
            det = "; ".join(f"from {src}: {pc(ri['adv_acc'])} at eps {ri['eps']:.4g} -> {pc(rj['adv_acc'])} at "
                            f"eps {rj['eps']:.4g} (+{pp(d)})" for (ex, ri, rj, d), src in bad[:3])
            out.append(entry("monotone_in_eps", "flag",
                              f"{len(bad)}/{len(measured)} sources rise with eps beyond tolerance: {det}",
                              dataset=ds, attack=atk, target=who(t, tr)))
        else:
            mx = max(x[0][3] for x in measured)
            out.append(entry("monotone_in_eps", "ok",
                              f"{len(measured)} source(s); largest rise {pp(max(mx, 0.0))} (within tolerance)",
                              dataset=ds, attack=atk, target=who(t, tr)))
    return out
