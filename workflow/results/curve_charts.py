"""Charts of runs epoch by epoch: validation accuracy (with its Wilson band), training accuracy and
loss, and successive halving's ladder. One line per run, never averaged; dashed rules where a run's
next stage starts (the head-only stage handing over to fine-tuning).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from workflow.results.aggregate import axis_columns, labels, varying_axes
from workflow.study.outputs import regime
from workflow.results.chartkit import (HEIGHT, LEGEND, WIDTH, colours, epoch_axis, faded_if_pruned, halved,
                                       halving_tooltip, loss_scale, open_if_pruned, placeholder, stage_rules, stages_note, title,
                                       with_panels, with_runs, with_stage_starts, with_stop_labels, with_wilson, words,
                                       wrap)

STOPPED = "where the run stopped"  # the legend's entry for the dot at the end of each line


def _stops(base: alt.Chart, data: pd.DataFrame, colour: alt.Color) -> alt.Chart:
    """A dot where each run stopped, in the legend: open for a pruned run of a halving study."""
    shape = alt.Shape("end:N", title=None, scale=alt.Scale(range=["circle"]), legend=LEGEND)
    stops = base.mark_point(size=50, opacity=1, filled=not halved(data)).encode(shape=shape, **open_if_pruned(data, colour))
    return stops.transform_filter(alt.datum.stopped)


def val_accuracy(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Validation accuracy against epoch, one line per run coloured by batch size, its 95 % Wilson band
    (from the validation split's size), a dot where it stopped; one panel per dataset and value of the
    other varying axes, in a grid (the batch-size paper's Figure 1)."""
    if histories.empty:
        return placeholder("No run finished an epoch.")
    other = varying_axes(histories, axis_columns(summary), exclude=("dataset", "batch_size", "seed"))
    data = with_stage_starts(with_stop_labels(histories) if halved(histories) else histories)
    n_val = data["cell"].map(summary.set_index("cell")["n_val"]) if "n_val" in summary else pd.Series(np.nan, data.index)
    data = with_wilson(data, "val_accuracy", n_val).assign(end=np.where(data["stopped"], STOPPED, None))
    data, panels = with_panels(data, [*varying_axes(data, ["dataset"]), *other])
    colour = alt.Color("batch_size:O", title="batch size", scale=colours(data["batch_size"].nunique()))
    base = alt.Chart().encode(x=alt.X("epoch:Q", title="epoch", axis=epoch_axis(data["epoch"])), color=colour,
                              detail="cell:N")
    y = alt.Y("val_accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False))
    lines = base.mark_line().encode(y=y, **faded_if_pruned(data), tooltip=[
        "cell:N", "epoch:Q", "stage:N", "val_accuracy:Q", "val_accuracy_low:Q", "val_accuracy_high:Q", "epoch_lr:Q",
        "best:N", *halving_tooltip(data)])
    layers = [lines, _stops(base.encode(y=y), data, colour), stage_rules()]
    band = data["val_accuracy_low"].notna().any()
    if band:
        layers.insert(0, base.mark_area(opacity=0.12).encode(y="val_accuracy_low:Q", y2="val_accuracy_high:Q"))
    chart = alt.layer(*layers, data=data).properties(width=WIDTH, height=HEIGHT)
    sizes = summary["n_val"].dropna() if "n_val" in summary else pd.Series(dtype=float)
    note = f"bands: 95 % Wilson interval of each epoch's accuracy on {int(sizes.max())} validation images" if band \
        and len(sizes) else "no bands: the validation split's size is unknown (no predictions.npz)"
    return wrap(chart, "panel" if panels else None, panels).properties(
        title=title("Validation accuracy per epoch, one line per run (not averaged)", note, stages_note(data)))


def _train_colour(data: pd.DataFrame, other: list[str]) -> tuple[pd.DataFrame, alt.Color, dict]:
    """One colour per line's configuration when there are at most 20 (a dash per other axis beyond)."""
    data, runs = with_runs(data, ["optimizer", *other])
    if len(runs) <= 20:
        return data, alt.Color("runs:N", title=None, sort=runs, scale=colours(len(runs)), legend=LEGEND), {}
    data = data.assign(dash=labels(data, other))
    dashes = list(dict.fromkeys(data.sort_values(other)["dash"]))
    colour = alt.Color("optimizer:N", title="optimizer", scale=colours(data["optimizer"].nunique()))
    return data, colour, {"strokeDash": alt.StrokeDash("dash:N", title=None, sort=dashes, legend=LEGEND)}


def train_curves(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Training accuracy (top) and loss (bottom, log scale when it spans orders of magnitude) against
    epoch, one line per run coloured by its configuration, one panel per model (and dataset)."""
    if histories.empty:
        return placeholder("No run finished an epoch.")
    other = varying_axes(histories, axis_columns(summary), exclude=("dataset", "model", "optimizer", "seed"))
    data = with_stage_starts(with_stop_labels(histories) if halved(histories) else histories)
    data, panels = with_panels(data, [*varying_axes(data, ["dataset"]), "model"])
    data, colour, dash = _train_colour(data, other)

    def measure(column: str, scale: alt.Scale, note: str) -> alt.Chart:
        rows = data[data[column] > 0] if scale.to_dict().get("type") == "log" else data
        base = alt.Chart().encode(x=alt.X("epoch:Q", title="epoch", axis=epoch_axis(data["epoch"])))
        lines = base.mark_line().encode(
            y=alt.Y(f"{column}:Q", title=words(column) + note, scale=scale), color=colour, detail="cell:N",
            tooltip=["cell:N", "epoch:Q", "stage:N", f"{column}:Q", *halving_tooltip(data)], **dash,
            **faded_if_pruned(data))
        return wrap(alt.layer(lines, stage_rules(), data=rows).properties(width=WIDTH, height=HEIGHT),
                    "panel", panels)

    scale, note = loss_scale(data["train_loss"])
    return alt.vconcat(measure("train_accuracy", alt.Scale(zero=False), ""), measure("train_loss", scale, note)).properties(
        title=title("Training accuracy and loss per epoch, one line per run (not averaged)",
                    "running means over each epoch's training batches: no intervals", stages_note(data)))


def regime_label(data: pd.DataFrame, other: list[str]) -> pd.Series:
    """Each row's training regime, its other varying axes and its cell's trainable parameters."""
    names = pd.Series([regime(w, t) for w, t in zip(data["weights"], data["train"])], index=data.index)
    if other:
        names = names + " " + labels(data, other)
    counts = data["trainable_parameters"] if "trainable_parameters" in data else pd.Series(pd.NA, index=data.index)
    return names + counts.map(lambda n: "" if pd.isna(n) else f" ({n / 1e6:.2f} M trainable)")


def regime_curves(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Validation accuracy (top) and loss (bottom) against epoch, one line per run coloured by its
    training regime with its trainable parameter count (the DenseNet paper's Figs. 7-12); one panel
    per dataset and model when they vary."""
    if histories.empty:
        return placeholder("No run finished an epoch.")
    other = varying_axes(summary, axis_columns(summary), exclude=("dataset", "model", "weights", "train", "seed"))
    data = with_stage_starts(histories).merge(summary[["cell", "trainable_parameters"]], on="cell", how="left")
    data = data.assign(regime=regime_label(data, other))
    data, panels = with_panels(data, varying_axes(data, ["dataset", "model"]))
    regimes = list(dict.fromkeys(data.sort_values(["weights", "train"])["regime"]))
    colour = alt.Color("regime:N", title="training regime", sort=regimes, scale=colours(len(regimes)), legend=LEGEND)

    def measure(column: str, scale: alt.Scale, note: str) -> alt.Chart:
        rows = data[data[column] > 0] if scale.to_dict().get("type") == "log" else data
        lines = alt.Chart().mark_line().encode(
            x=alt.X("epoch:Q", title="epoch", axis=epoch_axis(data["epoch"])),
            y=alt.Y(f"{column}:Q", title=words(column) + note, scale=scale), color=colour, detail="cell:N",
            tooltip=["cell:N", "regime:N", "epoch:Q", "stage:N", f"{column}:Q"])
        return wrap(alt.layer(lines, stage_rules(), data=rows).properties(width=WIDTH, height=HEIGHT),
                    "panel" if panels else None, panels)

    scale, note = loss_scale(data["val_loss"])
    return alt.vconcat(measure("val_accuracy", alt.Scale(zero=False), ""), measure("val_loss", scale, note)).properties(
        title=title("Validation accuracy and loss per epoch and training regime, one line per run (not averaged)",
                    "legend: each regime with the parameters its last stage trained", stages_note(data)))


def halving_chart(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Successive halving: each cell's validation accuracy and loss (log scale) per epoch, the rungs'
    budgets as dashed rules. A line ends where its cell stopped, coloured by that rung: an open dot for a
    pruned cell (its line faded), a filled one for a finalist. One column per dataset and model when
    they vary (cells compete within their group; see the study's search.group_by).
    """
    if histories.empty or "epoch_rung" not in histories:
        return placeholder("No run finished an epoch.")
    data = with_stage_starts(with_stop_labels(histories))
    data = data.assign(panel=labels(data, varying_axes(data, ["dataset", "model"]), empty=""))
    ends = data[data["stopped"]].sort_values(["epoch_rung", "pruned"], ascending=[False, True])
    stops = list(dict.fromkeys(ends["halving"]))
    colour = alt.Color("halving:N", title="stopped at", sort=stops, legend=LEGEND, scale=colours(len(stops)))
    panels = data["panel"].nunique() > 1

    def measure(column: str, scale: alt.Scale) -> alt.Chart:
        rows = data[np.isfinite(data[column].astype(float)) & (data[column] > 0 if scale.type == "log" else True)]
        base = alt.Chart().encode(
            x=alt.X("epoch:Q", title="epoch (all stages together)", axis=epoch_axis(data["epoch"])),
            y=alt.Y(f"{column}:Q", title=words(column) + (" (log scale)" if scale.type == "log" else ""), scale=scale),
            color=colour, detail="cell:N",
            tooltip=["cell:N", "epoch:Q", "stage:N", f"{column}:Q", "epoch_rung:Q", "halving:N"])
        rules = alt.Chart().transform_aggregate(groupby=["rung_budget", "panel"]).mark_rule(
            color="grey", strokeDash=[4, 3]).encode(x="rung_budget:Q", tooltip=["rung_budget:Q"])
        lines = base.mark_line().encode(**faded_if_pruned(rows))
        dots = base.mark_point(shape="circle", size=50, opacity=1, filled=False).encode(
            **open_if_pruned(rows, colour)).transform_filter(alt.datum.stopped)
        starts = stage_rules("epoch (all stages together)")
        chart = alt.layer(rules, starts, lines, dots, data=rows).properties(width=WIDTH * 1.5, height=HEIGHT)
        return chart.facet(column=alt.Column("panel:N", title=None)) if panels else chart

    return alt.vconcat(measure("val_accuracy", alt.Scale(zero=False)), measure("val_loss", alt.Scale(type="log"))).properties(
        title=title("Successive halving: validation accuracy and loss per epoch, one line per cell",
                    "grey dashed rules: the rungs' budgets", stages_note(data, "dotted: where a cell's next stage starts")))
