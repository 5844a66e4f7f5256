"""What every sanity check shares: the tolerance band, the records normalised once, one result entry.

Tolerances. Two accuracies ``a`` and ``b`` (means of ``R_a`` and ``R_b`` repeats with sample std
``s_a``, ``s_b``) are "different" when ``|a - b| > t · sqrt(s_a²/R_a + s_b²/R_b) + slack``, with
``t`` the two-sided 99 % Student quantile for ``R_a + R_b - 2`` degrees of freedom (``t`` = 4.60
for 3 + 3 repeats; 2.58 for many). A stochastic accuracy measured once has no std; it is then given
the binomial bound ``sqrt(p(1 - p)/n)`` (the spread of a per-image coin flip). ``slack`` is one
image (``1/n``) where both sides are the same inputs (eps = 0 vs clean) and ``ATTACK_SLACK`` (one
percentage point) where two different adversarial sets are compared (random starts, per-eps
randomness). This is a screening band, not a significance test with a controlled error rate.

A result entry is ``{name, status: ok|flag|not_measured, dataset, source, target, attack, detail}``
(the keys that do not apply are left out).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

from spkrobust.config.expand import parse_eps
from spkrobust.config.vocab import GRADIENT_TYPES, ITERATIVE_TYPES, NON_ATTACK_TYPES, SINGLE_STEP_TYPES
from spkrobust.text import pct

ATTACK_SLACK = 0.01   # accuracy fraction allowed between two different adversarial sets
CHANCE_TOL = 0.05     # large-eps accuracy may exceed chance by this much
LARGE_EPS = 0.25      # pixel units: below this the large-eps check is not measured
ZERO_GRAD_MAX = 0.05  # fraction of inputs with an all-zero input gradient
ENSEMBLE_DROP_MARGIN = 0.05  # accuracy fraction the ensemble may take below the other attacks' best
ITERATIVE = ITERATIVE_TYPES
SINGLE_STEP = SINGLE_STEP_TYPES
GRADIENT = GRADIENT_TYPES
# two-sided 99 % Student t quantiles
_T995 = {1: 63.657, 2: 9.925, 3: 5.841, 4: 4.604, 5: 4.032, 6: 3.707, 7: 3.499, 8: 3.355, 9: 3.250,
         10: 3.169, 12: 3.055, 15: 2.947, 20: 2.845, 30: 2.750, 60: 2.660}


def t995(df: int) -> float:
    if df <= 0:
        return _T995[1]
    for k in sorted(_T995):
        if df <= k:
            return _T995[k]
    return 2.576


def pc(v: float | None) -> str:
    """An accuracy in a check's detail: ``12.34%``."""
    return pct(v, 2, "n/a", "%")


def pp(v: float) -> str:
    """A difference of accuracies in a check's detail: ``1.23pp``."""
    return pct(v, 2, suffix="pp")


def is_noise(r: dict) -> bool:
    return r["_type"] in NON_ATTACK_TYPES


def who(name: Any, rep: Any) -> str:
    return f"{name} r{int(rep)}" if rep is not None else str(name)


class Acc:
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


def tol(a: Acc, b: Acc, slack: float) -> float:
    se = math.sqrt(a.se2() + b.se2())
    return (t995(a.reps + b.reps - 2) * se if se > 0 else 0.0) + slack


def adv(r: dict) -> Acc:
    return Acc(r["adv_acc"], r.get("adv_acc_std"), r.get("repeats"), r.get("n"), r.get("stochastic"))


def normalise(records: list[dict]) -> list[dict]:
    """The records with an adversarial accuracy, eps parsed, replicas as ints, ``_type`` = the
    record's ``attack_type`` (:mod:`spkrobust.evaluation.records`: every record carries it and its
    ``setting``)."""
    out = []
    for r in records or []:
        if r.get("adv_acc") is None:
            continue
        r = dict(r)
        r["eps"] = parse_eps(r["eps"], "eps")
        r["source_replica"] = int(r["source_replica"])
        r["target_replica"] = int(r["target_replica"])
        r["_type"] = str(r["attack_type"])
        out.append(r)
    return out


def entry(name, status, detail, **where) -> dict:
    e = {"name": name, "status": status}
    e.update({k: v for k, v in where.items() if v is not None})
    e["detail"] = detail
    return e


def verdict(name: str, items: list[tuple], flagged: Callable[[list], str], fine: Callable[[list], str],
            **where) -> dict:
    """``flag`` when some comparison ``(excess, ...)`` of ``items`` has ``excess > 0`` (``flagged``
    describes them, worst first), else ``ok`` (``fine`` describes all)."""
    bad = sorted((x for x in items if x[0] > 0), key=lambda x: -x[0])
    if bad:
        return entry(name, "flag", flagged(bad), **where)
    return entry(name, "ok", fine(items), **where)


def by_cell(recs):
    """(dataset, source, sr, target, tr, eps) -> {attack type: [records]}."""
    cells = defaultdict(lambda: defaultdict(list))
    for r in recs:
        cells[(r["dataset"], r["source"], r["source_replica"], r["target"], r["target_replica"], r["eps"])][r["_type"]].append(r)
    return cells
