"""The `models` chart (study key `rank`): each candidate model's LogME score beside its linear probe's test
accuracy (95 % Wilson interval) and, where its cells were fine-tuned, their best validation accuracy; the
subtitle gives Kendall's tau of each ranking against the fine-tuned order, with its p-value.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

from workflow.core import paths
from workflow.results.chartkit import HEIGHT, WIDTH, colours, placeholder, title
from workflow.results.models_table import GROUP, tau_lines

MODEL_CHARTS = ("models",)  # what `rank` adds to the study's charts


def _labelled(table: pd.DataFrame) -> pd.DataFrame:
    """The table with `candidate`: the model, and its dataset, resolution and weights where they vary."""
    varying = [column for column in GROUP if table[column].nunique() > 1]
    return table.assign(candidate=[" ".join([row["model"], *(str(row[c]) for c in varying)])
                                   for _, row in table.iterrows()])


def models_chart(table: pd.DataFrame) -> alt.Chart:
    """LogME by candidate (left); the probe's test accuracy with its interval and the fine-tuned best
    validation accuracy (right); one row per candidate, best LogME first."""
    if table.empty:
        return placeholder("No candidate was scored.")
    data = _labelled(table).sort_values("logme", ascending=False)
    order = list(data["candidate"])
    y = alt.Y("candidate:N", sort=order, title=None)
    logme = alt.Chart(data).mark_bar(color="#4c78a8").encode(
        y=y, x=alt.X("logme:Q", title="LogME (higher: features fit the labels better)"),
        tooltip=["candidate:N", "logme:Q", "feature_time_s:Q", "score_time_s:Q"]).properties(width=WIDTH, height=HEIGHT)
    long = pd.concat([data.assign(measure="linear probe, test", value=data["probe_test_accuracy"]),
                      data.assign(measure="fine-tuned, best validation", value=data["fine_tuned_val_accuracy"])])
    long = long[long["value"].notna()]
    base = alt.Chart(long).encode(y=y)
    points = base.mark_point(filled=True, size=70).encode(
        x=alt.X("value:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("measure:N", title=None, scale=colours(2)),
        shape="measure:N", tooltip=["candidate:N", "measure:N", "value:Q", "probe_test_low:Q", "probe_test_high:Q"])
    errors = alt.Chart(data).mark_rule(color="#555555").encode(y=y, x="probe_test_low:Q", x2="probe_test_high:Q")
    accuracy = alt.layer(errors, points).properties(width=WIDTH, height=HEIGHT)
    return alt.hconcat(logme, accuracy).properties(title=title(
        "Candidate models ranked from their features",
        "left: LogME of the train split's features; right: the linear probe's test accuracy (95 % Wilson "
        "interval) and the fine-tuned cells' best validation accuracy", *tau_lines(table)))


def model_charts(study, tables_dir: str | Path | None = None) -> dict:
    """The chart functions a study with `rank` adds, by name (for workflow.results.charts.draw_charts): the
    models chart drawn from the models table the aggregate job wrote."""
    if study.ranking is None:
        return {}
    path = Path(tables_dir or paths.tables_folder(study.out)) / "models.parquet"
    return {name: lambda summary, histories: models_chart(pd.read_parquet(path)) for name in MODEL_CHARTS}
