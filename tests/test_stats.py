"""Paired statistics (spkrobust.report.stats) on constructed per-image outcomes with known answers."""
import numpy as np

from spkrobust.report import stats as S


def test_paired_diff_ci_sides():
    n = 1000
    rng = np.random.default_rng(1)
    b = (rng.random(n) < 0.6).astype(float)
    a = b.copy()
    flip = rng.choice(np.flatnonzero(b == 0), 100, replace=False)
    a[flip] = 1                       # a is right on 100 more images: +10 points
    d = S.paired_diff(a, b, seed=0)
    assert abs(d.diff - 0.10) < 1e-12 and d.low > 0.07 and d.high < 0.13 and d.side() == 1
    assert S.paired_diff(b, a, seed=0).side() == -1
    # seeded: the same interval twice
    assert S.paired_diff(a, b, seed=0) == d
    # no systematic difference: a few discordant images both ways -> CI contains 0
    c = b.copy()
    c[flip[:5]] = 1
    c[np.flatnonzero(b == 1)[:5]] = 0
    assert S.paired_diff(c, b, seed=0).side() == 0


def test_paired_diff_degenerate_and_mcnemar():
    a = np.ones(50)
    d = S.paired_diff(a, a)
    assert (d.diff, d.low, d.high) == (0.0, 0.0, 0.0)
    x = np.array([1] * 60 + [0] * 40, bool)
    y = np.array([1] * 40 + [0] * 60, bool)
    assert S.mcnemar(x, y) < 1e-4 and S.mcnemar(x, x) == 1.0


def test_spearman():
    assert S.spearman([1, 2, 3, 4], [10, 9, 8, 1]) == -1.0
    assert S.spearman([1, 2], [1, 2]) is None
