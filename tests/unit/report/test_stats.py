"""Paired statistics (spkrobust.report.stats) on constructed per-image outcomes with known answers."""
import numpy as np
import pytest

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


def _crossed(rng, R, n, mu, s_rep, s_img, s_e):
    """D[r, i] = mu + rho_r + iota_i + e_ri: replica (training), image and interaction effects."""
    return (mu + rng.normal(0, s_rep, (R, 1)) + rng.normal(0, s_img, (1, n)) + rng.normal(0, s_e, (R, n)))


@pytest.mark.parametrize("s_rep", [0.0, 0.06])
def test_two_level_ci_covers_another_training_at_its_level(s_rep):
    # 3 replicas x 300 images; with a training spread the interval must still cover the true mean
    # ~95 % of the time, where an interval over images only (or a bootstrap that reuses 3 replicas)
    # falls far short
    rng = np.random.default_rng(2)
    covered = naive = 0
    sims = 400
    for _ in range(sims):
        D = _crossed(rng, 3, 300, 0.02, s_rep, 0.3, 0.3)
        d = S.two_level_diff(D, np.zeros_like(D))
        covered += d.low <= 0.02 <= d.high
        m = D.mean(0)
        half = 1.96 * m.std(ddof=1) / np.sqrt(len(m))
        naive += m.mean() - half <= 0.02 <= m.mean() + half
    assert 0.93 <= covered / sims <= 0.99
    if s_rep:
        assert naive / sims < 0.7
        # degrees of freedom fall towards R - 1 = 2: the interval is far wider than the images' one
        assert d.half_width > 2 * half
    else:
        assert naive / sims >= 0.9


def test_two_level_p_values_match_the_interval():
    rng = np.random.default_rng(3)
    D = _crossed(rng, 3, 200, 0.05, 0.005, 0.2, 0.2)
    d = S.two_level_diff(D, np.zeros_like(D))
    assert d.side() == 1 and d.p_greater < 0.025 and abs(d.p_greater + d.p_less - 1) < 1e-12
    assert S.two_level_diff(-D, np.zeros_like(D)).side() == -1


def test_pooled_diff_is_the_mean_and_shared_networks_are_not_independent_evidence():
    rng = np.random.default_rng(4)
    D1 = _crossed(rng, 3, 400, 0.02, 0.02, 0.3, 0.3)
    D2 = _crossed(rng, 3, 400, 0.06, 0.02, 0.3, 0.3)
    imgs = list(range(400))

    def block(D, reps=(1, 2, 3), images=imgs):
        return {"replicas": list(reps), "images": list(images), "c": D / D.shape[1]}

    one = S.pooled_diff([block(D1)])
    assert abs(one.diff - D1.mean()) < 1e-12 and one.runs == 3
    assert (one.low, one.high) == pytest.approx((S.two_level_diff(D1, 0 * D1).low, S.two_level_diff(D1, 0 * D1).high))
    both = S.pooled_diff([block(D1), block(D2)])
    assert abs(both.diff - (D1.mean() + D2.mean()) / 2) < 1e-12
    # the same comparison twice is one piece of evidence: the same interval, not a narrower one
    twice = S.pooled_diff([block(D1), block(D1)])
    assert (twice.low, twice.high) == pytest.approx((one.low, one.high))
    # a conditional-style block on a subset of the images still enters with its own mean
    sub = S.pooled_diff([block(D1), block(D2[:, :100] * 1.0, images=imgs[:100])])
    assert abs(sub.diff - (D1.mean() + D2[:, :100].mean()) / 2) < 1e-12
    # one replica: an image-level interval, runs = 1
    r1 = S.pooled_diff([block(D1[:1], reps=(1,))])
    assert r1.runs == 1 and r1.low < D1[0].mean() < r1.high
