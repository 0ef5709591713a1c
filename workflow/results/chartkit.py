"""What the study's charts share: sizes, titles that say what is drawn, axis titles in words, colour
schemes with a distinct hue per line, panels wrapped into grids, stage boundaries, log scales for
losses that span orders of magnitude, and the marks of successive halving's pruned runs.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from workflow.results.aggregate import format_value, labels
from workflow.results.inference import wilson_interval

WIDTH, HEIGHT = 260, 180
COLUMNS = 3  # panels per row of a grid
LEGEND = alt.Legend(labelLimit=400)  # labels name several axes' values
WORDS = {
    "test_accuracy": "test accuracy", "test_auc": "test ROC AUC", "test_macro_f1": "test macro F1",
    "best_val_accuracy": "validation accuracy",
    "val_accuracy": "validation accuracy", "val_loss": "validation loss", "train_accuracy": "training accuracy",
    "train_loss": "training loss", "batch_size": "batch size", "lr": "learning rate", "train_time_s": "training time (s)",
    "optimizer": "optimizer", "model": "model", "dataset": "dataset", "train": "what trains", "weights": "weights",
    "resolution": "resolution", "seed": "seed",
}
SHORT = {"batch_size": "bs", "lr": "lr", "resolution": "r", "seed": "s"}  # point labels: bs64 lr1e-3 adam
INTERVAL_WORDS = {"test_accuracy": "Wilson", "test_auc": "DeLong"}


def words(column: str) -> str:
    """An axis or metric in words: `test_accuracy` -> `test accuracy`."""
    return WORDS.get(column, column.replace("_", " "))


def title(text: str, *subtitle: str) -> alt.TitleParams:
    """A chart title saying what is drawn, and below it how (means over what, which intervals)."""
    return alt.TitleParams(text=text, subtitle=[line for line in subtitle if line], anchor="start",
                           subtitleColor="#555555")


def placeholder(message: str) -> alt.Chart:
    """A chart that says why there is nothing to draw (every run failed or diverged at once)."""
    return alt.Chart(pd.DataFrame({"text": [message]})).mark_text(size=14).encode(
        text="text:N").properties(width=WIDTH * 2, height=60)


def colours(count: int) -> alt.Scale:
    """A categorical scheme with a distinct hue for each of `count` values (ordinal values too)."""
    return alt.Scale(scheme="tableau10" if count <= 10 else "category20")


def short_label(row: pd.Series, axes: list[str]) -> str:
    """A point's label in a few characters: `bs64 lr1e-3 adam`."""
    return " ".join(f"{SHORT[axis]}{format_value(axis, row[axis])}" if axis in SHORT else
                    (str(row[axis]) if axis in WORDS else f"{axis}={row[axis]}") for axis in axes)


def averaged(axes: list[str], seeds: int) -> str:
    """What a mark averages over, for a subtitle: `mean over 3 seeds`, or `one run each`."""
    parts = [f"{seeds} seeds"] if seeds > 1 else []
    parts += [words(axis) for axis in axes]
    return "mean over " + " and ".join(parts) if parts else "one run each"


def wrap(chart: alt.Chart, panel: str | None, panels: list | None = None, columns: int = COLUMNS) -> alt.Chart:
    """Facet into a grid of at most `columns` panels a row, one per value of the column `panel`."""
    if panel is None:
        return chart
    count = len(panels) if panels is not None else columns
    return chart.facet(facet=alt.Facet(f"{panel}:N", title=None, sort=panels, header=alt.Header(labelLimit=400)),
                       columns=min(columns, max(count, 1)))


def with_panels(frame: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, list[str] | None]:
    """`frame` with a column `panel` labelling its values on `axes` (sorted by those values), or no
    panels (None) when no axis varies."""
    if not axes:
        return frame, None
    frame = frame.assign(panel=labels(frame, axes))
    return frame, list(dict.fromkeys(frame.sort_values(axes)["panel"]))


def with_runs(frame: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, list[str] | None]:
    """`frame` with a column `runs` labelling its values on `axes`, and the labels sorted by those
    values (None when no axis varies)."""
    if not axes:
        return frame, None
    frame = frame.assign(runs=labels(frame, axes))
    return frame, list(dict.fromkeys(frame.sort_values(axes)["runs"]))


def epoch_axis(epochs: pd.Series) -> alt.Axis:
    """Whole-number ticks, at most ten (Vega's tickMinStep does not stop 0.5 steps in every renderer)."""
    return alt.Axis(format="d", tickCount=max(1, min(int(epochs.max() - epochs.min()), 10)))


def wide(values: pd.Series, decades: float = 2.0) -> bool:
    """Whether positive values span `decades` orders of magnitude or more (a log axis reads them)."""
    values = pd.to_numeric(values, errors="coerce")
    values = values[np.isfinite(values) & (values > 0)]
    return len(values) > 1 and values.max() / values.min() >= 10**decades


def loss_scale(values: pd.Series) -> tuple[alt.Scale, str]:
    """A log scale and a note for losses that span orders of magnitude, else a linear one."""
    return (alt.Scale(type="log"), " (log scale)") if wide(values) else (alt.Scale(zero=False), "")


def with_stage_starts(histories: pd.DataFrame) -> pd.DataFrame:
    """Histories with `stage_start`: whether an epoch is the first of a new stage of its run (where the
    head-only stage hands over to fine-tuning), and `stage_change` naming the two stages."""
    previous = histories.groupby("cell")["stage"].shift()
    starts = previous.notna() & (previous != histories["stage"])
    change = (previous.astype(object).fillna("") + " → " + histories["stage"].astype(str)).where(starts, None)
    return histories.assign(stage_start=starts, stage_change=change, boundary=histories["epoch"] - 0.5)


def stages_note(data: pd.DataFrame, words: str = "dotted rules: where a run's next stage starts") -> str:
    """The subtitle line for stage rules, naming the changes drawn (`head → finetune`); '' when no run
    changes stage (data from with_stage_starts)."""
    changes = list(dict.fromkeys(data.loc[data["stage_start"], "stage_change"]))
    return f"{words} ({', '.join(changes)})" if changes else ""


def stage_rules(x_title: str = "epoch") -> alt.Chart:
    """Dotted grey vertical rules half an epoch before each run's first epoch of a new stage (a layer:
    its data come from the chart it joins, as with_stage_starts made them)."""
    return alt.Chart().mark_rule(color="#777777", strokeDash=[2, 3], opacity=0.7).encode(
        x=alt.X("boundary:Q", title=x_title), tooltip=["stage_change:N", "cell:N"]).transform_filter(
        alt.datum.stage_start)


def with_wilson(frame: pd.DataFrame, value: str, n: pd.Series) -> pd.DataFrame:
    """`frame` with `<value>_low` and `<value>_high`: the 95 % Wilson interval of the share `value`
    over `n` images (blank where n is unknown)."""
    bounds = [wilson_interval(round(v * k), int(k)) if pd.notna(v) and pd.notna(k) and k > 0 else (np.nan, np.nan)
              for v, k in zip(frame[value], n)]
    low, high = zip(*bounds) if bounds else ((), ())
    return frame.assign(**{f"{value}_low": list(low), f"{value}_high": list(high)})


# Successive halving: a pruned run (it stopped before the last rung) is drawn faded, its points open.
PRUNED = "datum.pruned === true"


def halved(frame: pd.DataFrame) -> bool:
    """Whether the table comes from a halving study (it then says which runs were pruned)."""
    return "pruned" in frame.columns and frame["pruned"].notna().any()


def epochs(count) -> str:
    return f"{int(count)} epoch" + ("" if int(count) == 1 else "s")


def with_stop_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a column `halving` that says where each run stopped, for tooltips and legends."""
    if "rung" in frame.columns:  # the summary: the rung and budget where the cell stopped
        stops = [None if pd.isna(rung) else f"rung {int(rung)} ({epochs(budget)})"
                 for rung, budget in zip(frame["rung"], frame["budget_epochs"])]
    else:  # histories: the rung of the cell's last epoch
        last = frame.groupby("cell")["epoch"].transform("max") == frame["epoch"]
        ends = frame[last].set_index("cell")
        stops = frame["cell"].map(lambda cell: f"rung {int(ends.loc[cell, 'epoch_rung'])} "
                                               f"({epochs(ends.loc[cell, 'rung_budget'])})")
    labelled = [None if stop is None else f"{stop}, {'pruned' if pruned is True else 'finalist'}"
                for stop, pruned in zip(stops, frame["pruned"].astype(object).where(frame["pruned"].notna(), None))]
    return frame.assign(halving=labelled)


def faded_if_pruned(frame: pd.DataFrame) -> dict:
    """Encodings that fade a pruned run's line (none outside halving studies)."""
    return {"opacity": alt.condition(PRUNED, alt.value(0.35), alt.value(1.0))} if halved(frame) else {}


def open_if_pruned(frame: pd.DataFrame, colour: alt.Color) -> dict:
    """Encodings that fill a point with its colour, or leave it open when its run was pruned."""
    if not halved(frame):
        return {}
    spec = colour.to_dict()
    extra = {key: spec[key] for key in ("sort", "scale") if key in spec}
    fill = alt.Fill(spec["field"], type=spec["type"], legend=None, **extra)
    return {"fill": fill, "fillOpacity": alt.condition(PRUNED, alt.value(0.0), alt.value(1.0))}


def halving_tooltip(frame: pd.DataFrame) -> list[str]:
    return ["halving:N"] if halved(frame) else []
