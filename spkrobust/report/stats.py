"""Paired statistics over per-image outcomes, from ``scipy.stats``.

Two models evaluated on the same test images are compared *paired*: each image contributes the
difference of its two per-image rates (the fraction of repeats it was classified correctly, so
repeats are averaged per image first). The confidence interval of the mean difference comes from
a seeded paired bootstrap over images (``scipy.stats.bootstrap(..., paired=True)``); whether two
accuracies differ at all is McNemar's exact test (``scipy.stats.binomtest`` on the discordant
images). Nothing here is hand-written statistics.
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
        return Diff(d, d, d, n)
    res = _st.bootstrap((a, b), _mean_of_pairs, paired=True, vectorized=True, n_resamples=n_resamples,
                        confidence_level=confidence, method=BOOTSTRAP_METHOD,
                        rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return Diff(d, float(ci.low), float(ci.high), n)


def paired_diff_groups(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], seed: int = 0,
                       n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> Diff:
    """Like :func:`paired_diff` when each side has several replicas (rows) on the same images.

    Each image's rate is averaged over its side's replicas before the images are resampled, so
    replicas never count as extra images; callers show the replicas' seed-to-seed spread beside
    the interval."""
    A = np.atleast_2d(np.asarray(a, dtype=float))
    B = np.atleast_2d(np.asarray(b, dtype=float))
    if A.shape[1] != B.shape[1]:
        raise ValueError("paired_diff_groups: both sides must cover the same images")
    return paired_diff(A.mean(axis=0), B.mean(axis=0), seed, n_resamples, confidence)


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
