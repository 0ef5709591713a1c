"""Altair charts of a study, each saved as offline HTML (Vega inlined), PNG and SVG.

Every chart function takes the summary and histories tables and returns one
chart; `CHARTS` maps the names that workflow.study.outputs.study_charts plans to
them. Axes that vary but are not the chart's subject split it into panels or
line styles, so runs are never silently averaged together.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from workflow.results.aggregate import axis_columns, format_value, labels, varying_axes
from workflow.atomic import atomic_path
from workflow.study.outputs import CHART_FORMATS, regime, trainable_layers
from workflow.results.stats import configurations, primary_metric

WIDTH, HEIGHT = 260, 180
LEGEND = alt.Legend(labelLimit=400)  # labels name several axes' values


def placeholder(message: str) -> alt.Chart:
    """A chart that says why there is nothing to draw (every run failed or diverged at once)."""
    return alt.Chart(pd.DataFrame({"text": [message]})).mark_text(size=14).encode(
        text="text:N").properties(width=WIDTH * 2, height=60)


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
    labels = [None if stop is None else f"{stop}, {'pruned' if pruned is True else 'finalist'}"
              for stop, pruned in zip(stops, frame["pruned"].astype(object).where(frame["pruned"].notna(), None))]
    return frame.assign(halving=labels)


def faded_if_pruned(frame: pd.DataFrame) -> dict:
    """Encodings that fade a pruned run's line (none outside halving studies)."""
    return {"opacity": alt.condition(PRUNED, alt.value(0.35), alt.value(1.0))} if halved(frame) else {}


def open_if_pruned(frame: pd.DataFrame, colour: alt.Color) -> dict:
    """Encodings that fill a point with its colour, or leave it open when its run was pruned."""
    if not halved(frame):
        return {}
    spec = colour.to_dict()
    fill = alt.Fill(spec["field"], type=spec["type"], legend=None, **({"sort": spec["sort"]} if "sort" in spec else {}))
    return {"fill": fill, "fillOpacity": alt.condition(PRUNED, alt.value(0.0), alt.value(1.0))}


def halving_tooltip(frame: pd.DataFrame) -> list[str]:
    return ["halving:N"] if halved(frame) else []


def epoch_axis(epochs: pd.Series) -> alt.Axis:
    """Whole-number ticks, at most ten (Vega's tickMinStep does not stop 0.5 steps in every renderer)."""
    return alt.Axis(format="d", tickCount=max(1, min(int(epochs.max() - epochs.min()), 10)))


def _with_runs(frame: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, list[str] | None]:
    """`frame` with a column `runs` labelling its values on `axes`, and the labels sorted by those
    values (None when no axis varies)."""
    if not axes:
        return frame, None
    frame = frame.assign(runs=labels(frame, axes))
    return frame, list(dict.fromkeys(frame.sort_values(axes)["runs"]))


def _facet(chart: alt.Chart, column: str | None, rows: list[str] | None) -> alt.Chart:
    """One column per value of `column` and one row per `runs` label, where given (else a single panel)."""
    facets = {"column": alt.Column(f"{column}:N", title=None)} if column else {}
    if rows is not None:
        facets["row"] = alt.Row("runs:N", title=None, sort=rows)
    return chart.facet(**facets) if facets else chart


def val_accuracy(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Validation accuracy against epoch, one line per run coloured by batch size, a dot where it stopped.

    One column per dataset (the batch-size paper's Figure 1); other varying axes give one row each.
    """
    if histories.empty:
        return placeholder("No run finished an epoch.")
    other = varying_axes(histories, axis_columns(summary), exclude=("dataset", "batch_size", "seed"))
    data, rows = _with_runs(with_stop_labels(histories) if halved(histories) else histories, other)
    colour = alt.Color("batch_size:O", title="batch size")
    base = alt.Chart(data).encode(
        x=alt.X("epoch:Q", title="epoch", axis=epoch_axis(data["epoch"])),
        y=alt.Y("val_accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False)),
        color=colour,
        detail="cell:N",
        tooltip=["cell:N", "epoch:Q", "stage:N", "val_accuracy:Q", "epoch_lr:Q", "best:N", *halving_tooltip(data)],
    )
    if halved(data):  # a pruned run: faded line, open dot where it stopped
        stops = base.mark_point(shape="circle", size=50, opacity=1, filled=False).encode(**open_if_pruned(data, colour))
    else:
        stops = base.mark_circle(size=50, opacity=1)
    lines = base.mark_line().encode(**faded_if_pruned(data))
    chart = (lines + stops.transform_filter(alt.datum.stopped)).properties(width=WIDTH, height=HEIGHT)
    return _facet(chart, "dataset", rows)


def test_metric_bars(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """The primary test metric by batch size, one bar per optimizer, one panel per model (and dataset).

    Bars are means over the cells that share those values (seeds and any other varying axis).
    """
    metric = primary_metric(summary)
    data = summary[summary["status"] == "ok"].dropna(subset=[metric])
    if data.empty:
        return placeholder("No run finished.")
    chart = alt.Chart(data).mark_bar().encode(
        x=alt.X("batch_size:O", title="batch size"),
        xOffset="optimizer:N",
        y=alt.Y(f"mean({metric}):Q", title=metric.replace("_", " "), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("optimizer:N"),
        tooltip=["batch_size:O", "optimizer:N", f"mean({metric}):Q", "count():Q"],
    ).properties(width=WIDTH, height=HEIGHT)
    facets = {"column": alt.Column("model:N", title=None)}
    if data["dataset"].nunique() > 1:
        facets["row"] = alt.Row("dataset:N", title=None)
    return chart.facet(**facets)


def train_curves(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Training accuracy and loss against epoch, one colour per optimizer, one column per model.

    Other varying axes (batch size, learning rate, ...) set the line dash.
    """
    if histories.empty:
        return placeholder("No run finished an epoch.")
    dash_axes = varying_axes(histories, axis_columns(summary), exclude=("dataset", "model", "optimizer", "seed"))
    data = histories.assign(panel=labels(histories, [*varying_axes(histories, ["dataset"]), "model"]))
    data, dashes = _with_runs(with_stop_labels(data) if halved(data) else data, dash_axes)
    encoding = {"strokeDash": alt.StrokeDash("runs:N", title=None, sort=dashes, legend=LEGEND)} if dashes else {}
    encoding.update(faded_if_pruned(data))
    chart = alt.Chart(data).transform_fold(
        ["train_accuracy", "train_loss"], as_=["measure", "value"]
    ).mark_line().encode(
        x=alt.X("epoch:Q", title="epoch", axis=epoch_axis(data["epoch"])),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color("optimizer:N", title="optimizer"),
        detail="cell:N",
        tooltip=["cell:N", "epoch:Q", "measure:N", "value:Q", *halving_tooltip(data)],
        **encoding,
    ).properties(width=WIDTH, height=HEIGHT)
    return chart.facet(row=alt.Row("measure:N", title=None), column=alt.Column("panel:N", title=None)).resolve_scale(
        y="independent")


def lr_batch_heatmap(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """The primary metric (AUC when there is one) over learning rate x batch size, one panel per optimizer.

    Each square is the mean over ok seeds; a grey square names the status of runs that never finished.
    """
    metric = primary_metric(summary)
    other = varying_axes(summary, axis_columns(summary), exclude=("optimizer", "batch_size", "lr", "seed"))
    keys = [*other, "optimizer", "batch_size", "lr"]
    squares = []
    for key, runs in summary.groupby(keys, sort=True):
        ok = runs[runs["status"] == "ok"][metric].dropna()
        squares.append({**dict(zip(keys, key)), "value": ok.mean() if len(ok) else None, "n_ok": len(ok),
                        "text": f"{ok.mean():.3f}" if len(ok) else "/".join(sorted(set(runs["status"])))})
    data = pd.DataFrame(squares)
    data["lr_label"] = data["lr"].map(lambda lr: format_value("lr", lr))
    middle = (data["value"].min() + data["value"].max()) / 2  # viridis is light above the middle
    data["ink"] = np.where(data["value"].isna() | (data["value"] >= middle), "black", "white")
    data, rows = _with_runs(data, other)
    base = alt.Chart(data).encode(
        x=alt.X("lr_label:O", title="learning rate", sort=[format_value("lr", lr) for lr in sorted(data["lr"].unique())]),
        y=alt.Y("batch_size:O", title="batch size"),
        tooltip=["optimizer:N", "batch_size:O", "lr_label:N", "value:Q", "n_ok:Q", "text:N"],
    )
    missing = base.mark_rect(color="#dddddd").transform_filter("datum.value === null")
    coloured = base.mark_rect().encode(color=alt.Color("value:Q", title=metric, scale=alt.Scale(scheme="viridis")))
    text = [base.mark_text(fontSize=11, color=ink).encode(text="text:N").transform_filter(f"datum.ink === '{ink}'")
            for ink in ("black", "white")]
    chart = alt.layer(missing, coloured.transform_filter("datum.value !== null"), *text).properties(
        width=WIDTH, height=HEIGHT)
    return _facet(chart, "optimizer", rows)


def trainable_layers_chart(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Test accuracy against the number of trainable layers: N for `last:N` (the head's layers
    included, as workflow.train.models counts them), 0 for `head` (the new head alone).

    One dot per ok run, the line through the means; other varying axes get a colour each.
    """
    ok = summary[summary["status"] == "ok"]
    data = ok.assign(layers=ok["train"].map(trainable_layers)).dropna(subset=["layers", "test_accuracy"])
    if data.empty:
        return placeholder("No run that trains the head or the last N layers finished.")
    data["layers"] = data["layers"].astype(int)
    other = varying_axes(data, axis_columns(summary), exclude=("train", "seed"))
    data, colours = _with_runs(with_stop_labels(data) if halved(data) else data, other)
    encoding = {"color": alt.Color("runs:N", title=None, sort=colours, legend=LEGEND)} if colours else {}
    layers = alt.X("layers:Q", title="trainable layers (last:N, head included; 0 = head only)", axis=alt.Axis(values=sorted(set(data["layers"]))))
    base = alt.Chart(data).encode(x=layers, **encoding)
    if halved(data):  # a pruned run: an open dot
        dots = base.mark_point(shape="circle", size=40, opacity=0.8, filled=False).encode(
            **open_if_pruned(data, encoding.get("color", alt.Color("model:N", legend=None))))
    else:
        dots = base.mark_circle(size=40, opacity=0.6)
    dots = dots.encode(
        y=alt.Y("test_accuracy:Q", title="test accuracy", scale=alt.Scale(zero=False)),
        tooltip=["cell:N", "train:N", "test_accuracy:Q", *halving_tooltip(data)])
    means = base.mark_line(point=True).encode(y="mean(test_accuracy):Q")
    return (dots + means).properties(width=WIDTH * 1.5, height=HEIGHT * 1.5)


def pareto_front(times: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Which points no other point beats on both time (lower) and score (higher)."""
    order = np.lexsort((-scores, times))
    front = np.zeros(len(times), dtype=bool)
    best = -np.inf
    for index in order:
        if scores[index] > best:
            front[index], best = True, scores[index]
    return front


def accuracy_vs_time(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """The primary metric against training time, one dot per ok run, the Pareto front as a step line.

    One panel per dataset; colour by training regime when it varies, else by model.
    """
    metric = primary_metric(summary)
    data = summary[summary["status"] == "ok"].dropna(subset=[metric, "train_time_s"]).copy()
    if data.empty:
        return placeholder("No run finished.")
    data["regime"] = [regime(w, f) for w, f in zip(data["weights"], data["train"])]
    data["pareto"] = False
    for _, group in data.groupby("dataset"):
        data.loc[group.index, "pareto"] = pareto_front(group["train_time_s"].to_numpy(float),
                                                       group[metric].to_numpy(float))
    colour = "regime" if data["regime"].nunique() > 1 else "model"
    if halved(data):
        data = with_stop_labels(data)
    base = alt.Chart(data).encode(
        x=alt.X("train_time_s:Q", title="training time (s)"),
        y=alt.Y(f"{metric}:Q", title=metric.replace("_", " "), scale=alt.Scale(zero=False)),
    )
    colour_encoding = alt.Color(f"{colour}:N")
    dots = base.mark_point(size=60, filled=not halved(data)).encode(
        color=colour_encoding, shape=alt.Shape("pareto:N", title="Pareto front"),
        tooltip=["cell:N", f"{metric}:Q", "train_time_s:Q", "regime:N", "pareto:N", *halving_tooltip(data)],
        **open_if_pruned(data, colour_encoding))
    front = base.mark_line(interpolate="step-after", color="grey", strokeDash=[4, 3]).transform_filter(
        alt.datum.pareto)
    chart = (front + dots).properties(width=WIDTH * 1.5, height=HEIGHT * 1.5)
    return _facet(chart, "dataset" if data["dataset"].nunique() > 1 else None, None)


def configs_chart(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Each configuration's mean over seeds with its 95 % CI, coloured by whether it ties with the best.

    One panel per (dataset, model); ties are Welch's t-test p > 0.05 against the best configuration.
    """
    configs = configurations(summary).dropna(subset=["mean"])
    if configs.empty:
        return placeholder("No configuration has a finished run.")
    verdict = configs["indistinguishable_from_best"].map({True: "ties with the best", False: "worse (p ≤ 0.05)"})
    configs = configs.assign(
        verdict=np.where(configs["rank"] == 1, "best", verdict.fillna("too few seeds to test").astype(object)),
        panel=labels(configs, ["dataset", "model"]),
        ci95_low=configs["ci95_low"].clip(0, 1), ci95_high=configs["ci95_high"].clip(0, 1))  # the metric's range
    metric = configs["metric"].iloc[0]
    base = alt.Chart(configs).encode(
        y=alt.Y("config:N", title=None, sort=alt.EncodingSortField(field="mean", order="descending"),
                axis=alt.Axis(labelLimit=400)))
    bars = base.mark_rule().encode(x=alt.X("ci95_low:Q", title=f"{metric.replace('_', ' ')} (mean, 95 % CI)",
                                           scale=alt.Scale(zero=False)), x2="ci95_high:Q")
    dots = base.mark_point(filled=True, size=60).encode(
        x="mean:Q", color=alt.Color("verdict:N", title=None),
        tooltip=["config:N", "mean:Q", "sd:Q", "ci95_low:Q", "ci95_high:Q", "n_ok:Q", "n_runs:Q", "p_vs_best:Q"])
    chart = (bars + dots).properties(width=WIDTH * 1.5)
    return chart.facet(row=alt.Row("panel:N", title=None)).resolve_scale(y="independent")


def halving_chart(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Successive halving: each cell's validation accuracy and loss (log scale) per epoch, the rungs'
    budgets as dashed rules. A line ends where its cell stopped, coloured by that rung: an open dot for a
    pruned cell (its line faded), a filled one for a finalist. One column per dataset and model when
    they vary (cells compete within their group; see the study's search.group_by).
    """
    if histories.empty or "epoch_rung" not in histories:
        return placeholder("No run finished an epoch.")
    data = with_stop_labels(histories)
    data = data.assign(panel=labels(data, varying_axes(data, ["dataset", "model"]), empty=""))
    ends = data[data["stopped"]].sort_values(["epoch_rung", "pruned"], ascending=[False, True])
    colour = alt.Color("halving:N", title="stopped at", sort=list(dict.fromkeys(ends["halving"])), legend=LEGEND)
    panels = data["panel"].nunique() > 1

    def measure(column: str, title: str, scale: alt.Scale) -> alt.Chart:
        rows = data[np.isfinite(data[column].astype(float)) & (data[column] > 0 if scale.type == "log" else True)]
        base = alt.Chart().encode(
            x=alt.X("epoch:Q", title="epoch (all stages together)", axis=epoch_axis(data["epoch"])),
            y=alt.Y(f"{column}:Q", title=title, scale=scale), color=colour, detail="cell:N",
            tooltip=["cell:N", "epoch:Q", "stage:N", f"{column}:Q", "epoch_rung:Q", "halving:N"])
        rules = alt.Chart().transform_aggregate(groupby=["rung_budget", "panel"]).mark_rule(
            color="grey", strokeDash=[4, 3]).encode(x="rung_budget:Q", tooltip=["rung_budget:Q"])
        lines = base.mark_line().encode(**faded_if_pruned(rows))
        dots = base.mark_point(shape="circle", size=50, opacity=1, filled=False).encode(
            **open_if_pruned(rows, colour)).transform_filter(alt.datum.stopped)
        chart = alt.layer(rules, lines, dots, data=rows).properties(width=WIDTH * 1.5, height=HEIGHT)
        return chart.facet(column=alt.Column("panel:N", title=None)) if panels else chart

    return alt.vconcat(measure("val_accuracy", "validation accuracy", alt.Scale(zero=False)),
                       measure("val_loss", "validation loss", alt.Scale(type="log")))


CHARTS = {
    "val_accuracy": val_accuracy,
    "test_accuracy": test_metric_bars,
    "train_curves": train_curves,
    "lr_batch_heatmap": lr_batch_heatmap,
    "trainable_layers": trainable_layers_chart,
    "accuracy_vs_time": accuracy_vs_time,
    "configs": configs_chart,
    "halving": halving_chart,
}


def save_chart(chart: alt.TopLevelMixin, out_dir: str | Path, name: str) -> None:
    """Save `<out_dir>/<name>.{html,png,svg}`: HTML that renders offline, PNG at 2x, SVG; atomically."""
    options = {"html": {"inline": True}, "png": {"scale_factor": 2}, "svg": {}}
    for fmt in CHART_FORMATS:
        with atomic_path(Path(out_dir) / f"{name}.{fmt}") as tmp:
            chart.save(str(tmp), format=fmt, **options[fmt])


def draw_charts(names: list[str], summary: pd.DataFrame, histories: pd.DataFrame, out_dir: str | Path) -> None:
    """Draw and save the named charts (see workflow.study.outputs.study_charts)."""
    for name in names:
        save_chart(CHARTS[name](summary, histories), out_dir, name)
