"""Uncertainty from one test set: intervals for a run's accuracy (Wilson), ROC AUC (DeLong) and macro
F1 (a percentile bootstrap), and paired tests of two configurations on the same test images (McNemar's
exact test, a paired bootstrap with a fixed seed). Plain numpy and scipy; inputs are per-image arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 1000  # paired bootstrap draws: p-values to 1/500, Monte Carlo error about 0.007 at p = 0.05
BOOTSTRAP_SEED = 0
CHUNK = 100  # bootstrap draws held in memory at once


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion (NaN, NaN when n is 0)."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf((1 + confidence) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _components(scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: per positive the share of negatives it outranks, per negative
    the share of positives that outrank it (ties count half), from midranks."""
    positives, negatives = scores[is_positive], scores[~is_positive]
    m, n = len(positives), len(negatives)
    ranks = stats.rankdata(np.concatenate([positives, negatives]))
    v10 = (ranks[:m] - stats.rankdata(positives)) / n
    v01 = 1 - (ranks[m:] - stats.rankdata(negatives)) / m
    return v10, v01


def delong_auc(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is absent."""
    is_positive = np.asarray(is_positive, bool)
    if is_positive.all() or not is_positive.any():
        return math.nan
    return float(_components(np.asarray(scores, float), is_positive)[0].mean())


def delong_interval(scores: np.ndarray, is_positive: np.ndarray,
                    confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """ROC AUC and its DeLong interval (normal approximation, clipped to [0, 1]); NaNs when a class
    has fewer than two images."""
    is_positive = np.asarray(is_positive, bool)
    if is_positive.sum() < 2 or (~is_positive).sum() < 2:
        return math.nan, math.nan, math.nan
    v10, v01 = _components(np.asarray(scores, float), is_positive)
    auc = float(v10.mean())
    se = math.sqrt(v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01))
    half = float(stats.norm.ppf((1 + confidence) / 2)) * se
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided p-value of McNemar's exact test: of the images exactly one of two classifiers gets
    right, is the split further from half-and-half than chance allows? 1.0 when they never disagree."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


def bootstrap_counts(n: int, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """The bootstrap's draws, CHUNK at a time: how often each of n images is drawn in each resample
    (an array resamples-in-chunk x n). The same seed gives the same draws, so every configuration
    compared on one test set sees the same resamples."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        picks = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        yield np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(np.int32)


def weighted_auc(counts: np.ndarray, scores: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """ROC AUC of each resample (a row of counts: how often each image is in it), ties counting half."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    weights = counts[:, order]
    positive = is_positive[order]
    if np.all(sorted_scores[1:] != sorted_scores[:-1]):  # no ties: each positive outranks the negatives before it
        negatives = weights * ~positive
        below = np.cumsum(negatives, axis=1, dtype=np.int64) - negatives
        pos = weights[:, positive]
        above = np.einsum("ij,ij->i", pos.astype(float), below[:, positive].astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            return above / (pos.sum(axis=1, dtype=np.int64) * negatives.sum(axis=1, dtype=np.int64))
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # groups of equal scores
    pos = np.add.reduceat(weights * positive, starts, axis=1).astype(float)
    neg = np.add.reduceat(weights * ~positive, starts, axis=1).astype(float)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + neg / 2)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def replicates(metric: str, runs: dict, labels: np.ndarray, resamples: int = RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> dict:
    """Bootstrap replicates of each configuration's metric (its mean over its runs) on shared resamples.

    `runs` maps a key to a list of per-image arrays, one per run: correctness (0/1) for `accuracy`,
    the positive class's score for `auc`; `labels` are the test labels (1 = positive, for `auc`).
    """
    n = len(labels)
    out = {key: [] for key in runs}
    positive = np.asarray(labels) == 1
    for counts in bootstrap_counts(n, resamples, seed):
        for key, arrays in runs.items():
            if metric == "accuracy":
                values = [counts @ np.asarray(a, float) / n for a in arrays]
            else:
                values = [weighted_auc(counts, np.asarray(a, float), positive) for a in arrays]
            out[key].append(np.mean(values, axis=0))
    return {key: np.concatenate(chunks) for key, chunks in out.items()}


def macro_f1_interval(labels: np.ndarray, predicted: np.ndarray, classes: int, confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro F1 (each class's 2 TP / (2 TP + FP + FN), 0 where a class
    is neither present nor predicted, averaged over `classes`), resampling the test images."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if len(labels) == 0:
        return math.nan, math.nan
    actual = np.eye(classes)[labels]
    guessed = np.eye(classes)[predicted]
    draws = []
    for counts in bootstrap_counts(len(labels), resamples, seed):
        hits = counts @ (actual * guessed)
        sizes = counts @ actual + counts @ guessed  # 2 TP + FP + FN per class
        f1 = np.divide(2 * hits, sizes, out=np.zeros_like(hits, dtype=float), where=sizes > 0)
        draws.append(f1.mean(axis=1))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.concatenate(draws), [tail, 100 - tail])
    return float(low), float(high)


def point_value(metric: str, arrays: list, labels: np.ndarray) -> float:
    """A configuration's metric on the whole test set: the mean over its runs."""
    if metric == "accuracy":
        return float(np.mean([np.mean(a) for a in arrays]))
    return float(np.mean([delong_auc(a, np.asarray(labels) == 1) for a in arrays]))


@dataclass(frozen=True)
class Paired:
    """A paired bootstrap's verdict on a - b: the difference, its percentile interval and p-value."""

    difference: float
    low: float
    high: float
    p: float


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p-value that a difference whose bootstrap draws are `draws` is zero: twice the
    smaller share of draws on either side of zero, each with one added (never exactly 0)."""
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return math.nan
    if np.all(draws == 0):
        return 1.0
    tail = min(int((draws <= 0).sum()), int((draws >= 0).sum()))
    return float(min(1.0, 2 * (tail + 1) / (len(draws) + 1)))


def compare(draws_a: np.ndarray, draws_b: np.ndarray, value_a: float, value_b: float,
            confidence: float = CONFIDENCE) -> Paired:
    """The paired verdict from two configurations' replicates on the same resamples."""
    draws = draws_a - draws_b
    finite = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (math.nan, math.nan)
    return Paired(value_a - value_b, float(low), float(high), bootstrap_p(draws))


def paired_bootstrap(metric: str, runs_a: list, runs_b: list, labels: np.ndarray,
                     resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Paired:
    """Paired bootstrap of the difference in `metric` (`accuracy` or `auc`, each configuration's mean
    over its runs) between two configurations tested on the same images, resampling the images."""
    draws = replicates(metric, {"a": runs_a, "b": runs_b}, labels, resamples, seed)
    return compare(draws["a"], draws["b"], point_value(metric, runs_a, labels), point_value(metric, runs_b, labels))
