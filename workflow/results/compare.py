"""Each configuration against the winner of its scope, on the same test images and across seeds.

On the test images: McNemar's exact test of accuracy when both have one run, else a paired
bootstrap (fixed seed) of the metric's mean over their runs; ROC AUC always by the paired bootstrap.
Across seeds: Welch's t-test when both have two runs or more. A configuration is `worse` (or `better
on test`) only when every test that applies rejects equality (p = the largest of their p-values,
an intersection-union test, still at level ALPHA); else `indistinguishable`; `untested` when no
test applies (one seed and no predictions.npz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from workflow.results.inference import compare, mcnemar_exact, point_value, replicates

ALPHA = 0.05
BOOTSTRAPPED = {"test_accuracy": "accuracy", "test_auc": "auc"}  # primary metric: what the bootstrap measures
MCNEMAR, BOOTSTRAP, WELCH = "McNemar exact", "paired bootstrap", "Welch"


@dataclass(frozen=True)
class Comparison:
    """One configuration against the winner: the tests run, their p-values and the verdict."""

    tests: str
    p_paired: float
    p_welch: float
    p: float
    verdict: str


CHOSEN = Comparison("", math.nan, math.nan, 1.0, "chosen")


def run_arrays(outcomes: list, metric: str) -> list | None:
    """The per-image arrays a paired test of `metric` needs, one per run; None unless every run has them."""
    if not outcomes:
        return None
    arrays = [o.correct if BOOTSTRAPPED[metric] == "accuracy" else o.positive for o in outcomes]
    return None if any(a is None for a in arrays) else arrays


def same_images(a: list, b: list) -> bool:
    """Whether two configurations' runs were tested on the same images (the same labels, in order)."""
    first = a[0].labels
    return all(len(o.labels) == len(first) and np.array_equal(o.labels, first) for o in [*a, *b])


class Bootstrap:
    """Paired-bootstrap replicates of configurations tested on one test set, drawn once for all of
    them (the same seed gives every configuration the same resamples)."""

    def __init__(self, metric: str, runs: dict, labels: np.ndarray):
        self.metric, self.labels = BOOTSTRAPPED[metric], labels
        self.draws = replicates(self.metric, runs, labels)
        self.values = {key: point_value(self.metric, arrays, labels) for key, arrays in runs.items()}

    def p(self, a, b) -> float:
        return compare(self.draws[a], self.draws[b], self.values[a], self.values[b]).p


def verdict(p: float, other_mean: float, winner_mean: float) -> str:
    if math.isnan(p):
        return "untested"
    if p > ALPHA:
        return "indistinguishable"
    return "better on test" if other_mean > winner_mean else "worse"


def against(winner, other, metric: str, values: dict, outcomes: dict, bootstrap: Bootstrap | None,
            means: dict) -> Comparison:
    """`other` against `winner` (keys of `values`: test metric per ok run, and of `outcomes`: the runs'
    outcomes when every run has predictions)."""
    tests, p_paired = [], math.nan
    mine, theirs = outcomes.get(winner), outcomes.get(other)
    if mine and theirs and same_images(mine, theirs):
        if BOOTSTRAPPED[metric] == "accuracy" and len(mine) == len(theirs) == 1:
            tests, p_paired = [MCNEMAR], mcnemar_exact(theirs[0].correct, mine[0].correct)
        elif bootstrap is not None and other in bootstrap.draws and winner in bootstrap.draws:
            tests, p_paired = [BOOTSTRAP], bootstrap.p(other, winner)
    p_welch = welch_p(values[other], values[winner])
    if not math.isnan(p_welch):
        tests.append(WELCH)
    ps = [p for p in (p_paired, p_welch) if not math.isnan(p)]
    p = max(ps) if ps else math.nan
    return Comparison(" + ".join(tests), p_paired, p_welch, p, verdict(p, means[other], means[winner]))


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test; NaN with fewer than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.ptp(a) <= 1e-12 and np.ptp(b) <= 1e-12:  # no spread at all: equal means or certainly different
        return 1.0 if np.isclose(np.mean(a), np.mean(b), rtol=0, atol=1e-12) else 0.0
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)  # squared standard errors
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    return float(2 * stats.t.sf(abs(t), df))


def bootstrap_for(keys: list, metric: str, outcomes: dict) -> Bootstrap | None:
    """One bootstrap for the configurations among `keys` that it can serve (every run with predictions,
    on the winner's test images), when any comparison among them needs it."""
    runs = {key: run_arrays(outcomes.get(key), metric) for key in keys}
    runs = {key: arrays for key, arrays in runs.items() if arrays is not None}
    if not runs:
        return None
    first = next(iter(runs))
    runs = {key: arrays for key, arrays in runs.items() if same_images(outcomes[first], outcomes[key])}
    several = any(len(arrays) > 1 for arrays in runs.values())
    if len(runs) < 2 or (BOOTSTRAPPED[metric] == "accuracy" and not several):
        return None
    return Bootstrap(metric, runs, outcomes[first][0].labels)


def compare_scope(ranked: list, metric: str, values: dict, outcomes: dict, means: dict,
                  bootstrap: Bootstrap | None = None) -> dict:
    """Comparison of every configuration in `ranked` (keys, the winner first) against the winner."""
    if not ranked:
        return {}
    winner = ranked[0]
    return {winner: CHOSEN, **{key: against(winner, key, metric, values, outcomes, bootstrap, means)
                               for key in ranked[1:]}}
