"""Tests of spkrobust.report.agree: two runs' claims side by side (constructed outcomes, a
simulation of independent reruns, and the CLI on two aggregated report folders)."""
from __future__ import annotations

import numpy as np
import pytest
from test_report import ROB_FAILS, ROB_HOLDS, make_world

from spkrobust.cli import main
from spkrobust.report import aggregate as agg, stats as S
from spkrobust.report.agree import RERUN_HOLD, agree, compare_runs


def claim(cid, verdict, diff=None, half=None):
    pooled = None if diff is None else {"diff": diff, "low": diff - half, "high": diff + half}
    return {"id": cid, "claim": f"claim {cid}", "verdict": verdict, "pooled": pooled}


def test_rerun_hold_is_the_normal_probability():
    # P(|X1 - X2| < z se) with X1 - X2 ~ N(0, 2 se^2): 2 Phi(1.96 / sqrt 2) - 1
    assert RERUN_HOLD == pytest.approx(0.834, abs=0.001)


def test_conflicts_differences_and_inside_checks():
    a = [claim("1", "supported (one training run)", 0.05, 0.04), claim("2", "inconclusive", 0.01, 0.03),
         claim("3", "inconclusive", 0.0, 0.01), claim("4", "inconclusive"), claim("5", "supported", 0.04, 0.03)]
    b = [claim("1", "contradicted", -0.03, 0.025), claim("2", "inconclusive", 0.02, 0.03),
         claim("3", "supported", 0.10, 0.01), claim("4", "inconclusive", 0.0, 0.02),
         claim("5", "inconclusive", 0.0, 0.03)]
    r = {x["id"]: x for x in compare_runs(a, b)}
    # supported (the one-run label aside) against contradicted: a conflict, whatever the estimates
    assert r["1"]["conflict"] and not r["1"]["agree"]
    assert (r["1"]["a_in_b"], r["1"]["b_in_a"]) == (False, False)
    # overlapping estimates: inside each other's CI, the difference interval holds 0
    assert r["2"]["a_in_b"] and r["2"]["b_in_a"] and r["2"]["agree"] and not r["2"]["differs"]
    d = r["2"]["delta"]
    assert d["diff"] == pytest.approx(0.01) and d["high"] - d["diff"] == pytest.approx(np.hypot(0.03, 0.03))
    # 10 points apart with 1-point CIs: the pooled values differ (Holm keeps it), no verdict conflict
    assert r["3"]["differs"] and not r["3"]["conflict"] and not r["3"]["agree"] and r["3"]["p"] < 1e-6
    # nothing pooled in one run: no estimate checks, agreement rests on the verdicts
    assert r["4"]["delta"] is None and r["4"]["p"] is None and r["4"]["agree"]
    # supported against inconclusive is no conflict; 4 points apart with 3-point CIs each is no difference
    assert r["5"]["agree"] and not r["5"]["a_in_b"] and not r["5"]["b_in_a"]


def test_one_lucky_difference_among_many_does_not_make_a_disagreement():
    """Each of 5 claims differs with p = 0.03 on its own; Holm over 5 needs p < 0.01 for the first."""
    from scipy.stats import norm
    half = 0.02
    se = np.hypot(half, half) / norm.ppf(1 - S.ALPHA / 2)  # the difference's standard error
    delta = norm.isf(0.03 / 2) * se
    a = [claim(str(k), "inconclusive", 0.0, half) for k in range(5)]
    b = [claim(str(k), "inconclusive", delta, half) for k in range(5)]
    rows = compare_runs(a, b)
    assert all(x["p"] == pytest.approx(0.03, rel=1e-6) for x in rows)
    assert not any(x["differs"] for x in rows) and all(x["agree"] for x in rows)
    rows = compare_runs(a[:1], b[:1])  # alone, the same difference is one
    assert rows[0]["differs"] and not rows[0]["agree"]


def _run(rng, R, n, mu, s_rep, s_img, s_e):
    """One run's pooled contributions [R, n] from the crossed model, its own images and trainings."""
    return mu + rng.normal(0, s_rep, (R, 1)) + rng.normal(0, s_img, (1, n)) + rng.normal(0, s_e, (R, n))


@pytest.mark.parametrize("s_rep", [0.0, 0.03])
def test_independent_reruns_fail_the_inside_check_often_but_not_the_difference_rule(s_rep):
    """Two 95 % intervals from independent runs (3 replicas each) of one true value: the other run's
    estimate is inside far less often than 95 % (the #22 check; 89-91 % here, 83 % in the normal limit),
    while the difference rule holds the truth at least 95 % of the time (98-99 % here)."""
    rng = np.random.default_rng(7)
    inside, held, k = 0, 0, 300
    for _ in range(k):
        ca, cb = (S.crossed_t(_run(rng, 3, 200, 0.02, s_rep, 0.2, 0.3)) for _ in range(2))
        row = compare_runs([claim("x", "inconclusive", ca.diff, ca.half_width)],
                           [claim("x", "inconclusive", cb.diff, cb.half_width)])[0]
        inside += row["a_in_b"] + row["b_in_a"]
        held += row["delta"]["low"] <= 0 <= row["delta"]["high"]
    assert inside / (2 * k) < 0.92
    assert held / k >= 0.93


@pytest.fixture
def report_dirs(tmp_path):
    def make(name, rob, seed0):
        root = tmp_path / name
        recs, mets, cleans = make_world(root, rob=rob, seed0=seed0)
        out = root / "report"
        agg.aggregate(recs, mets, out, cleans)
        return out
    return make


def test_cli_on_two_report_folders(report_dirs, tmp_path, capsys):
    a = report_dirs("seed0", ROB_HOLDS, 0)
    b = report_dirs("seed1", ROB_HOLDS, 1)
    fails = report_dirs("fails", ROB_FAILS, 2)
    # the same outcomes under other seeds: every claim agrees, the difference is 0
    out = tmp_path / "agree.md"
    assert main(["agree", str(a), str(b), "--out", str(out), "--check"]) == 0
    text = out.read_text()
    assert "**The runs agree**" in text and "training seeds 0, 1000" in text and "training seeds 1, 1001" in text
    assert "same seeds" not in text and "| 1 | claim" not in text
    assert "+0.0 [" in text  # b − a of identical pooled estimates
    # every claim holds in a and fails in b: verdicts conflict, --check says so
    capsys.readouterr()
    assert main(["agree", str(a), str(fails), "--check"]) == 1
    assert "**The runs disagree**" in capsys.readouterr().out
    text, ok = agree(a, fails)
    assert not ok and "verdicts conflict" in text
    # one run against itself: said, not passed off as a rerun
    text, ok = agree(a, a)
    assert ok and "same seeds" in text
    # clean accuracy per model over replicas, from models.csv (the clean stage's where it ran: r1 here)
    assert "| fashion_mnist | ann | 90.1 (90.0–90.2, 2) | 90.1 (90.0–90.2, 2) | +0.0 |" in agree(a, b)[0]
