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


def _rows(diffs, n=1000, base=500):
    """Replica rows [R, n]: b correct on the first ``base`` images, a on ``base + 1000 * d`` of them."""
    b = np.zeros((len(diffs), n))
    b[:, :base] = 1
    a = np.zeros_like(b)
    for r, d in enumerate(diffs):
        a[r, :base + int(round(n * d))] = 1
    return a, b


def test_two_level_ci_carries_the_training_seed_spread():
    # replicas disagree (+15, -2, -1 points): images alone would call it; the replicas do not
    a, b = _rows([0.15, -0.02, -0.01])
    images_only = S.paired_diff(a.mean(0), b.mean(0), seed=0)
    assert images_only.side() == 1
    d = S.paired_diff_groups(a, b, seed=0)
    assert d.runs == 3 and abs(d.diff - 0.04) < 1e-12 and d.low < 0 < d.high and d.side() == 0
    assert d.p_greater > 0.025
    # replicas agree (+4 points each): supported, with a small one-sided p
    a, b = _rows([0.04, 0.04, 0.04])
    d = S.paired_diff_groups(a, b, seed=0)
    assert d.side() == 1 and d.p_greater < 0.01 and d.p_less > 0.9
    assert S.paired_diff_groups(a, b, seed=0) == d          # seeded
    # one replica: the image bootstrap, runs = 1
    assert S.paired_diff_groups(a[:1], b[:1], seed=0).runs == 1


def test_holm():
    assert S.holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]   # 0.01 <= .05/3; 0.03 > .05/2
    assert S.holm([0.001, 0.02, 0.04], 0.05) == [True, True, True]
    assert S.holm([0.02] + [0.5] * 11, 0.05) == [False] * 12
