"""Altair charts of a study, each saved as offline HTML (Vega inlined), PNG and SVG.

Every chart function takes the summary and histories tables and returns one
chart; `CHARTS` maps the names that workflow.study.outputs.study_charts plans to
them (the curves in workflow.results.curve_charts, the test metric's charts in
workflow.results.metric_charts). Each chart's title says what it draws and what
it averages over; axes that vary but are not the chart's subject split it into
panels or colours, so runs are never silently averaged together.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

from workflow.atomic import atomic_path
from workflow.results.curve_charts import halving_chart, regime_curves, train_curves, val_accuracy
from workflow.results.metric_charts import (accuracy_vs_time, configs_chart, lr_batch_heatmap, test_metric_bars,
                                            trainable_layers_chart)
from workflow.study.outputs import CHART_FORMATS

CHARTS = {
    "val_accuracy": val_accuracy,
    "test_accuracy": test_metric_bars,
    "train_curves": train_curves,
    "lr_batch_heatmap": lr_batch_heatmap,
    "trainable_layers": trainable_layers_chart,
    "accuracy_vs_time": accuracy_vs_time,
    "regime_curves": regime_curves,
    "configs": configs_chart,
    "halving": halving_chart,
}


def save_chart(chart: alt.TopLevelMixin, out_dir: str | Path, name: str) -> None:
    """Save `<out_dir>/<name>.{html,png,svg}`: HTML that renders offline, PNG at 2x, SVG; atomically."""
    options = {"html": {"inline": True}, "png": {"scale_factor": 2}, "svg": {}}
    for fmt in CHART_FORMATS:
        with atomic_path(Path(out_dir) / f"{name}.{fmt}") as tmp:
            chart.save(str(tmp), format=fmt, **options[fmt])


def draw_charts(names: list[str], summary: pd.DataFrame, histories: pd.DataFrame, out_dir: str | Path,
                study_charts: dict | None = None) -> None:
    """Draw and save the named charts (see workflow.study.outputs.study_charts); `study_charts` adds chart
    functions that depend on the study (a sampled search's, workflow.results.search_charts)."""
    charts = {**CHARTS, **(study_charts or {})}
    for name in names:
        save_chart(charts[name](summary, histories), out_dir, name)
