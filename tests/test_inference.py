"""Intervals and paired tests against statsmodels, scipy and scikit-learn, and against answers worked
out by hand: Wilson, DeLong, McNemar's exact test and the paired bootstrap with a fixed seed."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from workflow.results.inference import (bootstrap_counts, bootstrap_p, delong_interval, mcnemar_exact,
                                        paired_bootstrap, delong_auc, weighted_auc, wilson_interval)


@pytest.mark.parametrize("successes, n", [(0, 12), (4, 12), (12, 12), (129, 135), (90, 100), (1, 1), (517, 1000)])
def test_wilson_interval_is_statsmodels(successes, n):
    expected = proportion_confint(successes, n, alpha=0.05, method="wilson")
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=1e-12)


def test_wilson_interval_of_nothing_is_blank():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def table(a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    """The 2 x 2 table statsmodels' mcnemar takes: rows a right / wrong, columns b right / wrong."""
    return [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]


@pytest.mark.parametrize("only_a, only_b, both, neither", [(9, 1, 80, 10), (5, 5, 40, 0), (0, 0, 20, 3), (12, 3, 0, 0),
                                                           (0, 7, 5, 5), (30, 18, 100, 2)])
def test_mcnemar_exact_is_statsmodels(only_a, only_b, both, neither):
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither, bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither, bool)
    expected = mcnemar(table(a, b), exact=True).pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, abs=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(expected, abs=1e-12)  # two-sided


def test_mcnemar_exact_by_hand():
    # 9 images only a gets right, 1 only b: P(X <= 1 | 10, 1/2) = 11/1024, two-sided 22/1024
    a = np.array([1] * 9 + [0] + [1] * 5, bool)
    b = np.array([0] * 9 + [1] + [1] * 5, bool)
    assert mcnemar_exact(a, b) == pytest.approx(22 / 1024)


def test_delong_interval_by_hand():
    # positives 0.9, 0.8, 0.4; negatives 0.7, 0.3: 5 of 6 pairs ordered, AUC 5/6
    # V10 = (1, 1, 1/2), V01 = (2/3, 1): var = var(V10)/3 + var(V01)/2 = (1/12)/3 + (1/18)/2 = 1/18
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3])
    positive = np.array([True, True, True, False, False])
    auc, low, high = delong_interval(scores, positive)
    half = stats.norm.ppf(0.975) * math.sqrt(1 / 18)
    assert auc == pytest.approx(5 / 6)
    assert (low, high) == pytest.approx((5 / 6 - half, 1.0))  # clipped at 1


def test_auc_with_ties_is_scikit_learn():
    rng = np.random.default_rng(3)
    positive = rng.random(300) < 0.4
    scores = np.round(rng.random(300) + positive * 0.3, 1)  # rounded: many ties
    assert delong_auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))
    assert delong_interval(scores, positive)[0] == pytest.approx(roc_auc_score(positive, scores))
    assert math.isnan(delong_auc(scores, np.zeros(300, bool)))


def test_delong_interval_covers_like_a_bootstrap():
    rng = np.random.default_rng(4)
    positive = rng.random(400) < 0.5
    scores = rng.normal(positive * 1.0, 1.0)
    auc, low, high = delong_interval(scores, positive)
    resampled = [roc_auc_score(positive[i], scores[i]) for i in rng.integers(0, 400, (2000, 400))]
    assert (high - low) / 2 == pytest.approx(1.96 * np.std(resampled), rel=0.1)


@pytest.mark.parametrize("decimals", [1, 12])  # many ties, and none
def test_weighted_auc_of_a_resample_is_the_auc_of_the_resampled_images(decimals):
    rng = np.random.default_rng(5)
    positive = rng.random(60) < 0.5
    scores = np.round(rng.random(60), decimals)
    counts = next(bootstrap_counts(60, resamples=5, seed=1))
    assert (counts.sum(axis=1) == 60).all()
    for row, auc in zip(counts, weighted_auc(counts, scores, positive)):
        picked = np.repeat(np.arange(60), row)
        assert auc == pytest.approx(roc_auc_score(positive[picked], scores[picked]))


def test_bootstrap_p_counts_both_tails():
    assert bootstrap_p(np.zeros(10)) == 1.0
    assert bootstrap_p(np.ones(99)) == pytest.approx(2 / 100)  # never at or below 0: (0 + 1) / 100, twice
    assert bootstrap_p(np.r_[np.ones(50), -np.ones(50)]) == 1.0


def test_paired_bootstrap_of_accuracy_is_scipys_percentile_interval():
    rng = np.random.default_rng(6)
    a = rng.random(200) < 0.85
    b = np.where(rng.random(200) < 0.8, a, ~a)  # b agrees with a on 80 % of the images
    result = paired_bootstrap("accuracy", [a], [b], labels=np.zeros(200), resamples=4000, seed=0)
    reference = stats.bootstrap((a.astype(float), b.astype(float)), lambda x, y: x.mean() - y.mean(), paired=True,
                                method="percentile", n_resamples=4000, rng=np.random.default_rng(0))
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert result.low == pytest.approx(reference.confidence_interval.low, abs=0.01)
    assert result.high == pytest.approx(reference.confidence_interval.high, abs=0.01)
    assert paired_bootstrap("accuracy", [a], [b], np.zeros(200), resamples=4000, seed=0) == result  # fixed seed


def test_paired_bootstrap_of_auc_is_scipys_percentile_interval():
    rng = np.random.default_rng(7)
    labels = (rng.random(300) < 0.5).astype(int)
    a, b = rng.normal(labels * 1.2, 1.0), rng.normal(labels * 0.8, 1.0)
    result = paired_bootstrap("auc", [a], [b], labels, resamples=2000, seed=0)
    reference = stats.bootstrap((a, b, labels), lambda x, y, z: roc_auc_score(z, x) - roc_auc_score(z, y), paired=True,
                                method="percentile", n_resamples=2000, rng=np.random.default_rng(1), vectorized=False)
    assert result.difference == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    assert result.low == pytest.approx(reference.confidence_interval.low, abs=0.015)
    assert result.high == pytest.approx(reference.confidence_interval.high, abs=0.015)
    assert result.p < 0.05 < paired_bootstrap("auc", [a], [a + 1e-9 * rng.random(300)], labels).p


def test_paired_bootstrap_of_identical_runs_finds_nothing_and_of_a_dominant_one_everything():
    right = np.ones(50, bool)
    same = paired_bootstrap("accuracy", [right], [right], np.zeros(50))
    assert (same.difference, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    apart = paired_bootstrap("accuracy", [right], [~right], np.zeros(50), resamples=999)
    assert apart.difference == 1.0 and apart.p == pytest.approx(2 / 1000)


def test_paired_bootstrap_averages_over_seeds():
    a1, a2 = np.r_[np.ones(40), np.zeros(10)].astype(bool), np.r_[np.ones(30), np.zeros(20)].astype(bool)
    b = np.r_[np.ones(20), np.zeros(30)].astype(bool)
    result = paired_bootstrap("accuracy", [a1, a2], [b], np.zeros(50))
    assert result.difference == pytest.approx((0.8 + 0.6) / 2 - 0.4)
