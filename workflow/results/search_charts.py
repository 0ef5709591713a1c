"""What a random or TPE search's drawn values did: the validation accuracy against each drawn key (a
scatter per key, a log axis where it was drawn log-uniform) and Optuna's parameter importances.

Both use the summary's best validation accuracy, what the search chooses on, and only cells whose
status is `ok` or `unstable` (a failed cell has no value); cells compete within their combination of
the grid's axes (their `group`).
"""

from __future__ import annotations

import json

import altair as alt
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from workflow.results.aggregate import axis_columns, varying_axes
from workflow.results.chartkit import HEIGHT, colours, placeholder, title, words
from workflow.study.sampling import TRAINING_PREFIX, USABLE_STATUSES

VALUE = "best_val_accuracy"
IMPORTANCE_COLUMNS = ["group", "parameter", "importance", "cells"]
PANEL_WIDTH = 220
SEARCH_TABLES = ("importance",)  # what a sampled search adds to the study's tables and charts
SEARCH_CHARTS = ("search",)


def search_table_names(study) -> list[str]:
    """The tables of workflow.study.outputs.study_tables that this module writes."""
    return list(SEARCH_TABLES) if study.sampling is not None else []


def column(key: str) -> str:
    """The summary column of a drawn key: the axis, or the training key without `training.`."""
    return key[len(TRAINING_PREFIX):] if key.startswith(TRAINING_PREFIX) else key


def _labelled(summary: pd.DataFrame, dimensions) -> pd.DataFrame:
    """The summary with a `group` column: the varying axes that are not drawn, as a label."""
    drawn = [column(d.key) for d in dimensions]
    fixed = varying_axes(summary, [axis for axis in axis_columns(summary) if axis not in drawn])
    return summary.assign(group=summary[fixed].astype(str).agg(" ".join, axis=1) if fixed else "all cells")


def _finished(summary: pd.DataFrame, dimensions) -> pd.DataFrame:
    """The cells with a value, labelled by their group."""
    labelled = _labelled(summary, dimensions)
    return labelled[labelled["status"].isin(USABLE_STATUSES) & labelled[VALUE].notna()]


def _distribution(dimension):
    if dimension.kind == "choice":
        return CategoricalDistribution([json.dumps(v) if isinstance(v, (list, dict)) else v for v in dimension.values])
    low, high = dimension.values
    if dimension.kind == "int":
        return IntDistribution(low, high)
    return FloatDistribution(low, high, log=dimension.log)


def _importances(cells: pd.DataFrame, dimensions) -> dict[str, float]:
    """Optuna's importances (fANOVA) of the drawn keys for one group's cells."""
    distributions = {d.key: _distribution(d) for d in dimensions if column(d.key) in cells}
    study = optuna.create_study(direction="maximize")
    for _, row in cells.iterrows():
        params = {key: row[column(key)] for key in distributions}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(row[VALUE])))
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))


def importance_table(summary: pd.DataFrame, dimensions) -> pd.DataFrame:
    """One row per group and drawn key: its importance for the validation accuracy (the group's sum to 1;
    empty where fewer than 3 cells finished or no key changes anything)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = _finished(summary, dimensions)
    rows = []
    for group in sorted(set(_labelled(summary, dimensions)["group"])):
        cells = done[done["group"] == group]
        try:
            importances = _importances(cells, dimensions) if len(cells) >= 3 else {}
        except (RuntimeError, ValueError):  # every cell the same value: nothing to attribute
            importances = {}
        rows += [{"group": group, "parameter": d.key, "importance": importances.get(d.key), "cells": len(cells)}
                 for d in dimensions]
    table = pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS)
    return table.astype({"importance": "float"}).sort_values(["group", "importance"], ascending=[True, False],
                                                              kind="stable", ignore_index=True)


def _panel(done: pd.DataFrame, dimension, groups: int) -> alt.Chart:
    name = column(dimension.key)
    if dimension.continuous:
        x = alt.X(f"{name}:Q", title=dimension.key, scale=alt.Scale(type="log" if dimension.log else "linear",
                                                                      zero=False))
    else:
        x = alt.X(f"{name}:O", title=dimension.key)
    return alt.Chart(done).mark_point(filled=True, size=50, opacity=0.8).encode(
        x=x, y=alt.Y(f"{VALUE}:Q", title=words(VALUE), scale=alt.Scale(zero=False)),
        color=alt.Color("group:N", title="group", scale=colours(groups)),
        tooltip=["cell:N", f"{name}:{'Q' if dimension.continuous else 'N'}", f"{VALUE}:Q", "status:N"],
    ).properties(width=PANEL_WIDTH, height=HEIGHT)


def search_chart(dimensions):
    """The chart function (summary, histories) -> chart for a search over `dimensions`."""
    def draw(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
        done = _finished(summary, dimensions)
        if done.empty:
            return placeholder("No run finished.")
        panels = [_panel(done, d, done["group"].nunique()) for d in dimensions if column(d.key) in done]
        return alt.hconcat(*panels).properties(title=title(
            "Best validation accuracy against each drawn value",
            "one point per finished cell; log axes where drawn log-uniform; colours: the grid's combinations"))
    return draw


def search_charts(study) -> dict:
    """The chart functions a sampled search adds, by name (for workflow.results.charts.draw_charts)."""
    return {"search": search_chart(study.sampling.dimensions)} if study.sampling is not None else {}


def search_tables(study, summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables a sampled search adds, by name."""
    return {"importance": importance_table(summary, study.sampling.dimensions)} if study.sampling is not None else {}
