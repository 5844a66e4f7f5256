"""Paired statistics over per-image outcomes, from ``scipy.stats``.

Two models evaluated on the same test images are compared *paired*: each image contributes the
difference of its two per-image rates (the fraction of repeats it was classified correctly, so
repeats are averaged per image first). The confidence interval of the mean difference comes from
a seeded paired bootstrap over images (``scipy.stats.bootstrap(..., paired=True)``); whether two
accuracies differ at all is McNemar's exact test (``scipy.stats.binomtest`` on the discordant
images). With several independently trained target replicas per side, :func:`two_level_diff`
resamples replicas, then images within each drawn replica (a seeded numpy hierarchical bootstrap),
so the interval carries the training-seed spread. Each interval also gives its one-sided bootstrap
p-values, which the claims' Holm rule (:func:`holm`) combines.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

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
    the interval knows nothing of the training seed). Several rows: :func:`two_level_diff`."""
    A = np.atleast_2d(np.asarray(a, dtype=float))
    B = np.atleast_2d(np.asarray(b, dtype=float))
    if A.shape != B.shape:
        raise ValueError("paired_diff_groups: both sides must cover the same replicas and images")
    if A.shape[0] == 1:
        return paired_diff(A[0], B[0], seed, n_resamples, confidence)
    return two_level_diff(A, B, seed, n_resamples, confidence)


_CHUNK = 64  # resamples drawn at once: bounds the [chunk, replicas, images] index array


def two_level_diff(a, b, seed: int = 0, n_resamples: int = N_RESAMPLES,
                   confidence: float = CONFIDENCE) -> Diff:
    """Mean ``a - b`` over replicas x images with a two-level (hierarchical) bootstrap CI.

    ``a``, ``b``: [replicas, images], paired row by row and column by column. Each resample draws
    the replicas with replacement, then, inside each drawn replica, the images with replacement,
    and takes the mean difference; the percentile interval and one-sided p-values come from those
    resamples (numpy ``default_rng(seed)``). Drawn in fixed chunks of ``_CHUNK`` resamples so memory
    is bounded by chunk x replicas x images indices, not by ``n_resamples``."""
    D = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    R, n = D.shape
    d = float(D.mean())
    if R < 2 or n < 2:
        raise ValueError("two_level_diff: needs >= 2 replicas and >= 2 images")
    rng = np.random.default_rng(seed)
    rows = rng.integers(R, size=(n_resamples, R))
    dist = np.empty(n_resamples)
    for s in range(0, n_resamples, _CHUNK):
        r = rows[s:s + _CHUNK]
        imgs = rng.integers(n, size=(len(r), R, n))
        dist[s:s + len(r)] = D[r[:, :, None], imgs].mean(axis=(1, 2))
    lo, hi = np.quantile(dist, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Diff(d, float(lo), float(hi), n, *_one_sided(dist), runs=R)


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
