"""Altair charts of a study, saved as offline HTML (Vega inlined) and PNG."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

from workflow.atomic import atomic_path


def validation_curves(histories: pd.DataFrame) -> alt.Chart:
    """Validation accuracy against epoch, one line per cell coloured by batch size; best epochs circled."""
    base = alt.Chart(histories).encode(
        x=alt.X("epoch:Q", title="epoch"),
        y=alt.Y("val_accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False)),
        color=alt.Color("batch_size:O", title="batch size"),
        detail="cell:N",
    )
    lines = base.mark_line().encode(tooltip=["cell:N", "epoch:Q", "stage:N", "val_accuracy:Q", "lr:Q"])
    best = base.mark_point(size=60, filled=False).transform_filter(alt.datum.best_epoch)
    return (lines + best).properties(width=260, height=180).facet(row="optimizer:N", column="model:N")


def test_accuracy_bars(summary: pd.DataFrame) -> alt.Chart:
    """Test accuracy by batch size, one bar per optimizer, one panel per model."""
    return alt.Chart(summary).mark_bar().encode(
        x=alt.X("batch_size:O", title="batch size"),
        xOffset="optimizer:N",
        y=alt.Y("test_accuracy:Q", title="test accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("optimizer:N"),
        tooltip=["cell:N", "test_accuracy:Q", "status:N", "epochs_run:Q"],
    ).properties(width=260, height=200).facet(column="model:N")


def save_chart(chart: alt.Chart, html: str | Path, png: str | Path) -> None:
    """Save as self-contained HTML (renders with no network) and as PNG, atomically."""
    with atomic_path(html) as tmp:
        chart.save(str(tmp), format="html", inline=True)
    with atomic_path(png) as tmp:
        chart.save(str(tmp), format="png")
