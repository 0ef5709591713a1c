"""Replicate seeds: spread and 95 % confidence intervals per configuration, the best and its ties.

A *configuration* is a cell without its seed. Only cells with status `ok`
count; `n_runs` and `n_ok` say how many were left out. Configurations are
compared within each (dataset, model) on the study's primary test metric with
Welch's t-test against the best: p > 0.05 means the data cannot tell them apart.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from workflow.results.aggregate import axis_columns, labels, varying_axes

ALPHA = 0.05
GROUP = ["dataset", "model"]


def primary_metric(summary: pd.DataFrame) -> str:
    """`test_auc` when the finished cells report it (binary tasks), else `test_accuracy`."""
    ok = summary[summary["status"] == "ok"]
    return "test_auc" if "test_auc" in ok and ok["test_auc"].notna().any() else "test_accuracy"


def config_axes(summary: pd.DataFrame) -> list[str]:
    """The axes that make a configuration: every axis but the seed."""
    return [axis for axis in axis_columns(summary) if axis != "seed"]


def mean_ci(values: np.ndarray, confidence: float = 1 - ALPHA) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the t-distribution confidence interval (NaN below two values)."""
    n = len(values)
    if n == 0:
        return (math.nan,) * 4
    mean = float(np.mean(values))
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test; NaN with fewer than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.var(a) == 0 and np.var(b) == 0:  # no spread at all: equal means or certainly different
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def configurations(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: runs, mean ± sd and 95 % CI of the primary metric, and the test against the best."""
    metric = primary_metric(summary)
    axes = config_axes(summary)
    label_axes = varying_axes(summary, axes, exclude=(*GROUP, "seed"))
    rows, samples = [], []
    for key, runs in summary.groupby(axes, dropna=False, sort=True):
        ok = runs[runs["status"] == "ok"]
        values = ok[metric].dropna().to_numpy(float)
        mean, sd, low, high = mean_ci(values)
        rows.append({
            **dict(zip(axes, key)), "n_runs": len(runs), "n_ok": len(ok), "metric": metric,
            "mean": mean, "sd": sd, "ci95_low": low, "ci95_high": high,
            "mean_best_val_accuracy": ok["best_val_accuracy"].mean(),
            "mean_train_time_s": ok["train_time_s"].mean(),
        })
        samples.append(values)
    configs = pd.DataFrame(rows)
    configs.insert(len(axes), "config", labels(configs, label_axes, empty="(the only configuration)"))
    configs["p_vs_best"] = math.nan
    configs["indistinguishable_from_best"] = pd.Series(pd.NA, index=configs.index, dtype="boolean")
    configs["rank"] = configs.groupby(GROUP)["mean"].rank(ascending=False, method="first").astype("Int64")
    for _, group in configs.groupby(GROUP):
        ranked = group.dropna(subset=["mean"])
        if ranked.empty:
            continue
        best = ranked["mean"].idxmax()
        for index in ranked.index:
            p = 1.0 if index == best else welch_p(samples[index], samples[best])
            configs.loc[index, "p_vs_best"] = p
            if not math.isnan(p):
                configs.loc[index, "indistinguishable_from_best"] = p > ALPHA
    return configs.sort_values([*GROUP, "rank"], kind="stable").reset_index(drop=True)


def best_table(configs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): the recommended configuration, its margin over the runner-up, how many tie with it.

    `configs` is what `configurations` returns: its axis columns come before `config`.
    """
    axes = [column for column in configs.columns[: configs.columns.get_loc("config")] if column not in GROUP]
    rows = []
    for key, group in configs.dropna(subset=["mean"]).groupby(GROUP, sort=True):
        group = group.sort_values("rank")
        best = group.iloc[0]
        runner = group.iloc[1] if len(group) > 1 else None
        rows.append({
            **dict(zip(GROUP, key)), "config": best["config"], **best[axes].to_dict(),
            "n_runs": best["n_runs"], "n_ok": best["n_ok"], "metric": best["metric"],
            "mean": best["mean"], "sd": best["sd"], "ci95_low": best["ci95_low"], "ci95_high": best["ci95_high"],
            "runner_up": None if runner is None else runner["config"],
            "runner_up_mean": math.nan if runner is None else runner["mean"],
            "margin": math.nan if runner is None else best["mean"] - runner["mean"],
            "runner_up_p": math.nan if runner is None else runner["p_vs_best"],
            "n_indistinguishable": _count_ties(group["indistinguishable_from_best"].iloc[1:]),
        })
    columns = [*GROUP, "config", *axes, "n_runs", "n_ok", "metric", "mean", "sd", "ci95_low", "ci95_high",
               "runner_up", "runner_up_mean", "margin", "runner_up_p", "n_indistinguishable"]
    return pd.DataFrame(rows, columns=columns).astype({"n_indistinguishable": "Int64"})


def _count_ties(verdicts: pd.Series):
    """How many of these configurations tie with the best; NA when none of them could be tested."""
    return int(verdicts.sum()) if verdicts.notna().any() else pd.NA
