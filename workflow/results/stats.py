"""Configurations (a cell without its seed), chosen on validation and confirmed on test.

Only cells with status `ok` count; `n_runs` and `n_ok` say how many were left out. Within each
(dataset, model), and across the models of each dataset, configurations are ranked on the selection
metric (SELECTIONS, the study's `selection`), their mean over ok seeds; ties go to the lower
validation loss, then the shorter training, then grid order. The test metric (the primary metric)
never chooses: it confirms, with a 95 % interval, and every configuration is compared with the
winner (workflow.results.compare). With several seeds the interval adds the across-seed t-interval
and the test-set interval (Wilson or DeLong) in quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from workflow.results.aggregate import METRICS, axis_columns, labels, varying_axes
from workflow.results.compare import ALPHA, bootstrap_for, compare_scope

GROUP = ["dataset", "model"]
# name: (summary column, higher is better, in words)
SELECTIONS = {
    "val_accuracy": ("best_val_accuracy", True, "validation accuracy"),
    "val_auc": ("val_auc", True, "validation ROC AUC"),
    "val_loss": ("best_val_loss", False, "validation loss"),
}
INTERVALS = {"test_accuracy": ("test_accuracy_low", "test_accuracy_high", "Wilson"),
             "test_auc": ("test_auc_low", "test_auc_high", "DeLong")}


@dataclass(frozen=True)
class Selection:
    """What ranks the configurations: a SELECTIONS name, and why it is not the one asked for, if not."""

    name: str
    note: str | None = None

    @property
    def column(self) -> str:
        return SELECTIONS[self.name][0]

    @property
    def higher_is_better(self) -> bool:
        return SELECTIONS[self.name][1]

    @property
    def words(self) -> str:
        return SELECTIONS[self.name][2]


def primary_metric(summary: pd.DataFrame) -> str:
    """`test_auc` when the finished cells report it (binary tasks), else `test_accuracy`."""
    ok = summary[summary["status"] == "ok"]
    return "test_auc" if "test_auc" in ok and ok["test_auc"].notna().any() else "test_accuracy"


def resolve_selection(summary: pd.DataFrame, selection: str | None = None) -> Selection:
    """The selection metric: the one asked for, or with `auto` (or none) validation AUC where the
    primary metric is test AUC and validation accuracy otherwise. Validation AUC needs every ok
    cell's predictions.npz of a two-class dataset; without them it falls back to validation accuracy."""
    asked = selection or "auto"
    name = ("val_auc" if primary_metric(summary) == "test_auc" else "val_accuracy") if asked == "auto" else asked
    if name not in SELECTIONS:
        raise ValueError(f"selection: unknown {asked!r}; choose one of auto, {', '.join(SELECTIONS)}")
    ok = summary[summary["status"] == "ok"]
    if name == "val_auc" and len(ok) and ("val_auc" not in ok or ok["val_auc"].isna().any()):
        missing = int(ok["val_auc"].isna().sum()) if "val_auc" in ok else len(ok)
        return Selection("val_accuracy", f"selection {asked}: validation ROC AUC needs predictions.npz of a "
                                         f"two-class dataset, and {missing} of {len(ok)} ok cells have none; "
                                         "ranked on validation accuracy instead")
    return Selection(name)


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


def confirmation_interval(ok: pd.DataFrame, metric: str, mean: float, seeds_high: float) -> tuple[float, float, str]:
    """A configuration's 95 % interval of the test metric and how it was made: one run's own interval
    (Wilson for accuracy, DeLong for AUC); with several, the t-interval over seeds widened by the runs'
    mean test-set half-width (in quadrature)."""
    low_column, high_column, name = INTERVALS[metric]
    runs = ok.dropna(subset=[metric])
    lows, highs = runs[low_column].to_numpy(float), runs[high_column].to_numpy(float)
    if len(runs) == 0:
        return math.nan, math.nan, ""
    if len(runs) == 1:
        return (lows[0], highs[0], f"{name} 95 %") if np.isfinite(lows[0]) else (math.nan, math.nan, "")
    halves = (highs - lows) / 2
    if not np.isfinite(halves).any():
        return mean - (seeds_high - mean), seeds_high, f"t 95 % over {len(runs)} seeds"
    half = math.hypot(seeds_high - mean, float(np.nanmean(halves)))
    return max(0.0, mean - half), min(1.0, mean + half), f"t over {len(runs)} seeds + {name}, 95 %"


def _config_row(key, runs: pd.DataFrame, axes: list[str], metric: str, chosen: Selection) -> tuple[dict, np.ndarray]:
    """One configuration's row (its runs are `runs`) and its ok runs' test metric values."""
    ok = runs[runs["status"] == "ok"]
    values = ok[metric].dropna().to_numpy(float)
    mean, sd, low, high = mean_ci(values)
    test_low, test_high, method = confirmation_interval(ok, metric, mean, high)
    return {
        **dict(zip(axes, key if isinstance(key, tuple) else (key,))), "cells": " ".join(ok["cell"]),
        "n_runs": len(runs), "n_ok": len(ok), "selection": chosen.name, "val_mean": ok[chosen.column].mean(),
        "metric": metric, "mean": mean, "test_low": test_low, "test_high": test_high, "interval": method,
        "n_val": ok["n_val"].max(), "n_test": ok["n_test"].max(), "majority_rate": ok["test_majority_rate"].mean(),
        "sd": sd, "ci95_low": low, "ci95_high": high,
        "mean_best_val_accuracy": ok["best_val_accuracy"].mean(), "mean_best_val_loss": ok["best_val_loss"].mean(),
        "mean_train_time_s": ok["train_time_s"].mean(),
    }, values


def rank_within(configs: pd.DataFrame, keys: list[str], chosen: Selection) -> pd.Series:
    """Rank (1 = best) on the selection metric within each group of `keys`; ties: lower validation
    loss, then shorter training, then grid order. NA where nothing finished."""
    sign = -1.0 if chosen.higher_is_better else 1.0
    order = configs.assign(_value=sign * configs["val_mean"], _loss=configs["mean_best_val_loss"],
                           _time=configs["mean_train_time_s"], _order=np.arange(len(configs)))
    order = order.dropna(subset=["_value"]).sort_values([*keys, "_value", "_loss", "_time", "_order"],
                                                         na_position="last", kind="stable")
    ranks = order.groupby(keys, sort=False, dropna=False).cumcount() + 1
    return ranks.reindex(configs.index).astype("Int64")


def _ranked(frame: pd.DataFrame, rank: str) -> list:
    return list(frame.dropna(subset=[rank]).sort_values(rank).index)


def _add_comparisons(configs: pd.DataFrame, metric: str, values: dict, runs: dict) -> None:
    """Compare every configuration with its (dataset, model) winner and with its dataset's overall winner."""
    means = configs["mean"].to_dict()
    for column, dtype in (("tests", object), ("p_paired", float), ("p_welch", float), ("p_vs_best", float),
                          ("verdict", object), ("overall_tests", object), ("overall_p", float),
                          ("overall_verdict", object)):
        configs[column] = pd.Series(None if dtype is object else math.nan, index=configs.index, dtype=dtype)
    for _, dataset in configs.groupby("dataset", sort=False):
        overall = _ranked(dataset, "overall_rank")
        bootstrap = bootstrap_for(overall, metric, runs)
        for key, comparison in compare_scope(overall, metric, values, runs, means, bootstrap).items():
            configs.loc[key, ["overall_tests", "overall_p", "overall_verdict"]] = [
                comparison.tests, comparison.p, comparison.verdict]
        for _, model in dataset.groupby("model", sort=False):
            ranked = _ranked(model, "rank")
            for key, comparison in compare_scope(ranked, metric, values, runs, means, bootstrap).items():
                configs.loc[key, ["tests", "p_paired", "p_welch", "p_vs_best", "verdict"]] = [
                    comparison.tests, comparison.p_paired, comparison.p_welch, comparison.p, comparison.verdict]
    verdicts = configs["p_vs_best"].map(lambda p: pd.NA if math.isnan(p) else p > ALPHA)
    configs["indistinguishable_from_best"] = verdicts.astype("boolean")


def configurations(summary: pd.DataFrame, selection: str | None = None, outcomes: dict | None = None) -> pd.DataFrame:
    """One row per configuration: its ok runs, the selection metric's mean, the test metric's mean with
    its intervals, its rank within its dataset and model (`rank`) and dataset (`overall_rank`), and the
    comparison with the winner. `outcomes` (cell id: workflow.results.predictions.Outcome) allows the
    paired tests on the test images; without them only seeds are compared."""
    summary = summary.assign(**{name: math.nan for name in METRICS if name not in summary})
    metric, chosen = primary_metric(summary), resolve_selection(summary, selection)
    axes = config_axes(summary)
    label_axes = varying_axes(summary, axes, exclude=(*GROUP, "seed"))
    rows, values, runs = [], {}, {}
    for key, group in summary.groupby(axes, dropna=False, sort=True):
        row, values[len(rows)] = _config_row(key, group, axes, metric, chosen)
        cells = row["cells"].split()
        if outcomes and cells and all(cell in outcomes for cell in cells):
            runs[len(rows)] = [outcomes[cell] for cell in cells]
        rows.append(row)
    configs = pd.DataFrame(rows)
    configs.insert(len(axes), "config", labels(configs, label_axes, empty="(the only configuration)"))
    configs["rank"] = rank_within(configs, GROUP, chosen)
    configs["overall_rank"] = rank_within(configs, ["dataset"], chosen)
    _add_comparisons(configs, metric, values, runs)
    return configs.sort_values([*GROUP, "rank"], kind="stable").reset_index(drop=True)


def scoped_name(row: pd.Series, with_model: bool) -> str:
    """A configuration's name within its scope: with its model where the scope spans models."""
    return f"{row['model']}: {row['config']}" if with_model else row["config"]


BEST_COLUMNS = ["selection", "val_value", "n_runs", "n_ok", "metric", "mean", "test_low", "test_high", "interval",
                "n_val", "n_test", "majority_rate", "sd", "ci95_low", "ci95_high", "runner_up", "runner_up_val",
                "val_margin", "runner_up_mean", "runner_up_low", "runner_up_high", "test_margin", "runner_up_p",
                "runner_up_tests", "runner_up_verdict", "n_indistinguishable", "indistinguishable"]
PER_CONFIG = ("n_runs", "n_ok", "metric", "mean", "test_low", "test_high", "interval", "n_val", "n_test",
              "majority_rate", "sd", "ci95_low", "ci95_high")


def _best_row(group: pd.DataFrame, scope: str, axes: list[str], with_model: bool) -> dict | None:
    """The winner of a scope (`overall`: a dataset, across models; `per model`) and what it beat."""
    rank, tests, verdict, p = ("overall_rank", "overall_tests", "overall_verdict", "overall_p") if scope == "overall" \
        else ("rank", "tests", "verdict", "p_vs_best")
    ranked = group.dropna(subset=[rank]).sort_values(rank)
    if ranked.empty:
        return None
    best, others = ranked.iloc[0], ranked.iloc[1:]
    runner = others.iloc[0] if len(others) else None
    sign = 1.0 if SELECTIONS[best["selection"]][1] else -1.0
    ties = others[others[verdict] == "indistinguishable"]
    tested = others[verdict].isin(["indistinguishable", "worse", "better on test"]).any()
    return {
        "dataset": best["dataset"], "model": best["model"], "scope": scope, "config": scoped_name(best, with_model),
        **best[axes].to_dict(), "selection": best["selection"], "val_value": best["val_mean"],
        **{column: best[column] for column in PER_CONFIG},
        "runner_up": None if runner is None else scoped_name(runner, with_model),
        "runner_up_val": math.nan if runner is None else runner["val_mean"],
        "val_margin": math.nan if runner is None else sign * (best["val_mean"] - runner["val_mean"]),
        "runner_up_mean": math.nan if runner is None else runner["mean"],
        "runner_up_low": math.nan if runner is None else runner["test_low"],
        "runner_up_high": math.nan if runner is None else runner["test_high"],
        "test_margin": math.nan if runner is None else best["mean"] - runner["mean"],
        "runner_up_p": math.nan if runner is None else runner[p],
        "runner_up_tests": None if runner is None else runner[tests],
        "runner_up_verdict": None if runner is None else runner[verdict],
        "n_indistinguishable": len(ties) if tested else pd.NA,
        "indistinguishable": "; ".join(scoped_name(row, with_model) for _, row in ties.iterrows()),
    }


def best_table(configs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset the recommended configuration across models (`scope` overall), and where the dataset
    has several models the best of each (`per model`): chosen on validation, its test metric with its
    interval, the runner-up (on validation) and the configurations indistinguishable from it on test.

    `configs` is what `configurations` returns: its axis columns come before `config`.
    """
    axes = [column for column in configs.columns[: configs.columns.get_loc("config")] if column not in GROUP]
    rows = []
    for _, dataset in configs.groupby("dataset", sort=True):
        several = dataset.dropna(subset=["rank"])["model"].nunique() > 1
        rows.append(_best_row(dataset, "overall", axes, with_model=several))
        if several:
            rows += [_best_row(model, "per model", axes, with_model=False) for _, model in dataset.groupby("model")]
    columns = [*GROUP, "scope", "config", *axes, *BEST_COLUMNS]
    return pd.DataFrame([row for row in rows if row], columns=columns).astype({"n_indistinguishable": "Int64"})
