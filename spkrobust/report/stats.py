"""Paired statistics over per-image outcomes, from ``scipy.stats``.

Two models evaluated on the same test images are compared *paired*: each image contributes the
difference of its two per-image rates (the fraction of repeats it was classified correctly, so
repeats are averaged per image first). The confidence interval of the mean difference comes from
a seeded paired bootstrap over images (``scipy.stats.bootstrap(..., paired=True)``); whether two
accuracies differ at all is McNemar's exact test (``scipy.stats.binomtest`` on the discordant
images). With several independently trained target replicas per side, :func:`two_level_diff`
models replicas and images as crossed random effects and scales each variance part by its own
Student-t quantile (few replicas: wide, as another training can land far away);
:func:`pooled_diff` pools a claim's comparisons the same way. Each interval also gives its
one-sided p-values, which the claims' Holm rule (:func:`holm`) combines.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st
from scipy.optimize import brentq as _brentq

N_RESAMPLES = 2000       # bootstrap resamples for every confidence interval
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE   # McNemar's test level for "clean accuracies differ"
BOOTSTRAP_METHOD = "percentile"


@dataclass(frozen=True)
class Diff:
    """Mean paired difference ``a - b`` over ``n`` images with its confidence interval."""
    diff: float
    low: float
    high: float
    n: int
    p_greater: float = 1.0   # one-sided bootstrap p-value of H0 "a - b <= 0"
    p_less: float = 1.0      # one-sided bootstrap p-value of H0 "a - b >= 0"
    runs: int = 1            # independently trained target replicas behind the interval

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def side(self) -> int:
        """+1 when the CI lies above 0, -1 when below, 0 when it contains 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def as_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


def _mean_of_pairs(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _one_sided(dist: np.ndarray) -> tuple[float, float]:
    """(p of "diff <= 0", p of "diff >= 0") from a bootstrap distribution (add-one, never 0)."""
    k = len(dist)
    return float((1 + np.sum(dist <= 0)) / (k + 1)), float((1 + np.sum(dist >= 0)) / (k + 1))


def paired_diff(a: Sequence[float], b: Sequence[float], seed: int = 0,
                n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> Diff:
    """Mean of ``a - b`` over paired images and its seeded percentile-bootstrap CI."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired_diff: a and b must be 1-D and of equal length (paired on the same images)")
    n = len(a)
    d = float(np.mean(a - b)) if n else float("nan")
    if n < 2 or np.all(a - b == (a - b)[0]):
        # no spread to resample (scipy returns NaN for a degenerate distribution): the CI is the point
        return Diff(d, d, d, n, *_one_sided(np.full(n_resamples, d)))
    res = _st.bootstrap((a, b), _mean_of_pairs, paired=True, vectorized=True, n_resamples=n_resamples,
                        confidence_level=confidence, method=BOOTSTRAP_METHOD,
                        rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return Diff(d, float(ci.low), float(ci.high), n, *_one_sided(res.bootstrap_distribution))


def paired_diff_groups(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], seed: int = 0,
                       n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> Diff:
    """Like :func:`paired_diff` when each side has several replicas (rows) on the same images.

    Rows are target replicas, paired by replica number (row r of ``a`` and of ``b`` come from the
    same training replica index). One row: the image bootstrap of :func:`paired_diff` (``runs`` = 1,
    the interval knows nothing of the training seed). Several rows: :func:`two_level_diff` (closed
    form: ``seed`` and ``n_resamples`` only serve the one-row bootstrap)."""
    A = np.atleast_2d(np.asarray(a, dtype=float))
    B = np.atleast_2d(np.asarray(b, dtype=float))
    if A.shape != B.shape:
        raise ValueError("paired_diff_groups: both sides must cover the same replicas and images")
    if A.shape[0] == 1:
        return paired_diff(A[0], B[0], seed, n_resamples, confidence)
    return two_level_diff(A, B, confidence)


def two_level_diff(a, b, confidence: float = CONFIDENCE) -> Diff:
    """Mean ``a - b`` over replicas x images with a CI that carries the training-seed spread.

    ``a``, ``b``: [replicas R, images n], paired row by row (the same replica index) and column by
    column (the same image). The differences ``D = a - b`` follow a crossed two-way random-effects
    model, ``D[r, i] = mu + rho_r + iota_i + e_ri`` (training replica, test image, interaction), and
    the grand mean's variance ``s_rho^2 / R + s_iota^2 / n + s_e^2 / (R n)`` is estimated from the
    ANOVA mean squares: ``max(MS_rep - MS_res, 0) / (R n)`` for the replicas plus ``MS_img / (R n)``
    (= the variance of the per-image means over ``n``) for images and interaction. The half-width
    scales each part by its own Student-t quantile, ``sqrt(t_{R-1}^2 v_rep + t_{n-1}^2 v_img)``, so
    when the training spread dominates it is the t-interval over the R replicas (3 replicas: 4.30,
    not the 1.96 a percentile bootstrap over the same 3 values effectively uses, which understates
    another training's spread), and with no training spread the paired interval over images. In
    simulation (``tests/unit/report/test_stats.py``) it covers the true mean 95-96 % of the time at
    every training spread; Welch-Satterthwaite degrees of freedom gave 91-92 % with 3 replicas.
    One-sided p-values: half the complement of the level whose interval just touches 0 (so
    ``p < 0.025`` exactly when the 95 % interval excludes 0). Closed-form: no resampling, no seed."""
    D = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if D.ndim != 2 or D.shape[0] < 2 or D.shape[1] < 2:
        raise ValueError("two_level_diff: needs [replicas >= 2, images >= 2]")
    return crossed_t(D, confidence)


def crossed_t(Z: np.ndarray, confidence: float = CONFIDENCE) -> Diff:
    """``Z.mean()`` of ``Z`` [replicas, images] with the crossed-model interval of
    :func:`two_level_diff` (one replica: the t-interval over images, ``runs`` = 1)."""
    R, n = Z.shape
    d = float(Z.mean())
    if R == 1:
        v_rep, v_img = 0.0, float(np.var(Z[0], ddof=1)) / n
    else:
        v_rep, v_img = variance_components(Z)
    if v_rep + v_img <= 0:
        return Diff(d, d, d, n, float(d <= 0), float(d >= 0), runs=R)

    def half(level: float) -> float:  # each variance part scaled by its own t quantile
        q_rep = _st.t.ppf((1 + level) / 2, R - 1) if R > 1 else 0.0
        return float(np.sqrt(q_rep ** 2 * v_rep + _st.t.ppf((1 + level) / 2, n - 1) ** 2 * v_img))

    h = half(confidence)
    # one-sided p: half the complement of the level whose interval just touches 0
    top = 1 - 1e-15
    p = 0.5 * (1 - _brentq(lambda c: half(c) - abs(d), 0.0, top)) if half(top) > abs(d) else 1e-16
    p_greater, p_less = (p, 1 - p) if d > 0 else (1 - p, p) if d < 0 else (0.5, 0.5)
    return Diff(d, d - h, d + h, n, float(p_greater), float(p_less), runs=R)


def variance_components(D: np.ndarray) -> tuple[float, float]:
    """(replica part, image part) of the variance of ``D.mean()`` for ``D`` [replicas, images]
    under the crossed random-effects model of :func:`two_level_diff`."""
    R, n = D.shape
    rep = D.mean(axis=1)
    img = D.mean(axis=0)
    ms_rep = n * np.var(rep, ddof=1)
    ms_img = R * np.var(img, ddof=1)
    resid = D - rep[:, None] - img[None, :] + D.mean()
    ms_res = float(np.sum(resid ** 2)) / ((R - 1) * (n - 1))
    return max(ms_rep - ms_res, 0.0) / (R * n), float(ms_img) / (R * n)


def pooled_diff(blocks: Sequence[dict], confidence: float = CONFIDENCE) -> Diff:
    """Mean of several comparisons' differences, with the CI of :func:`two_level_diff`.

    Each block is one comparison: ``{"replicas": [replica ids], "images": [image ids], "c": [R_k, n_k]}``
    with its difference as ``c.sum(axis=1).mean()`` (per-image contributions, already weighted by
    ``1 / n_k`` or by the conditional metric's mask). The pooled estimate is the plain mean over the
    blocks; its interval applies the crossed replica x image model to the blocks' contributions summed
    on the union of replica ids and image ids, so comparisons that share trained networks (the same
    replica id) or test images are correlated in it, not counted as independent evidence."""
    if not blocks:
        raise ValueError("pooled_diff: no comparisons")
    reps = sorted({r for b in blocks for r in b["replicas"]})
    imgs = sorted({i for b in blocks for i in b["images"]})
    ri = {r: k for k, r in enumerate(reps)}
    ii = {i: k for k, i in enumerate(imgs)}
    Y = np.zeros((len(reps), len(imgs)))
    for b in blocks:
        c = np.asarray(b["c"], dtype=float)
        rows = [ri[r] for r in b["replicas"]]
        cols = [ii[i] for i in b["images"]]
        # a block with R_k of the R replicas enters each of its rows with weight R / R_k
        Y[np.ix_(rows, cols)] += c * (len(reps) / len(rows)) / len(blocks)
    if len(imgs) < 2:
        raise ValueError("pooled_diff: needs >= 2 images")
    return crossed_t(Y * len(imgs), confidence)  # grand mean of Y * n = the pooled estimate


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down rejections (family-wise error rate <= ``alpha``), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    reject = np.zeros(m, bool)
    for k, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - k):
            break
        reject[i] = True
    return reject.tolist()


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> float:
    """Exact McNemar p-value: do two models' accuracies on the same images differ?"""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(_st.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (None when undefined: < 3 points or a constant side)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(_st.spearmanr(x, y).statistic)


def majority(rate: Sequence[float]) -> np.ndarray:
    """Per-image correctness from per-image rates over repeats (correct in more than half)."""
    return np.asarray(rate, dtype=float) > 0.5
