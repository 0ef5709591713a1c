"""Charts of the test metric: by batch size and optimizer, over learning rate x batch size, by
trainable layers, against training time, and per configuration. Every value carries its 95 %
interval (Wilson or DeLong for one run, widened by the seeds' spread for several), and a title that
says what it averages over; axes that vary but are not the chart's subject get panels of their own.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from workflow.results.aggregate import axis_columns, format_value, labels, varying_axes
from workflow.results.chartkit import (HEIGHT, LEGEND, WIDTH, averaged, colours, halved, halving_tooltip,
                                       open_if_pruned, placeholder, short_label, title, with_panels, with_runs,
                                       with_stop_labels, words, wrap)
from workflow.results.stats import config_axes, configurations, primary_metric
from workflow.study.outputs import regime, trainable_layers

# accuracy_vs_time's point labels (fontSize 9): a character's mean width and a line's height, in pixels
CHARACTER_PX, LINE_PX = 5.0, 11.0
VERDICTS = {"chosen": "#4c78a8", "indistinguishable": "#72b7b2", "worse": "#bab0ac", "better on test": "#e45756",
            "untested": "#f2cf5b"}


def intervals_note(configs: pd.DataFrame, marks: str = "error bars") -> str:
    """Which intervals the error bars (or other `marks`) are, for a subtitle."""
    kinds = sorted({kind for kind in configs["interval"] if kind})
    return f"{marks}: {'; '.join(kinds)}" if kinds else f"no {marks}: no test-set sizes (no predictions.npz)"


def _ok_configs(summary: pd.DataFrame) -> pd.DataFrame:
    return configurations(summary).dropna(subset=["mean"])


def test_metric_bars(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """The primary test metric by batch size, one bar per optimizer, one panel per model (and dataset
    and value of any other varying axis): each bar a configuration, its mean over ok seeds, with its
    95 % interval."""
    metric = primary_metric(summary)
    configs = _ok_configs(summary)
    if configs.empty:
        return placeholder("No run finished.")
    other = varying_axes(configs, config_axes(summary), exclude=("batch_size", "optimizer", "dataset", "model"))
    data, panels = with_panels(configs, [*varying_axes(configs, ["dataset"]), "model", *other])
    base = alt.Chart().encode(x=alt.X("batch_size:O", title="batch size"), xOffset="optimizer:N")
    bars = base.mark_bar().encode(
        y=alt.Y("mean:Q", title=words(metric), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("optimizer:N", title="optimizer", scale=colours(configs["optimizer"].nunique())),
        tooltip=["config:N", "mean:Q", "test_low:Q", "test_high:Q", "interval:N", "n_ok:Q", "n_runs:Q"])
    errors = base.mark_rule(color="black", strokeWidth=1.5).encode(y="test_low:Q", y2="test_high:Q")
    chart = alt.layer(bars, errors, data=data).properties(width=WIDTH, height=HEIGHT)
    return wrap(chart, "panel", panels).properties(title=title(
        f"{words(metric).capitalize()} by batch size and optimizer",
        f"bars: {averaged([], int(configs['n_ok'].max()))}, a panel per model and other varying axis",
        intervals_note(configs)))


def _square_text(row: pd.Series) -> str:
    if pd.isna(row["mean"]):
        return row["statuses"]
    interval = "" if pd.isna(row["test_low"]) else f"\n[{row['test_low']:.2f}, {row['test_high']:.2f}]"
    return f"{row['mean']:.3f}{interval}"


def lr_batch_heatmap(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """The primary metric (AUC when there is one) over learning rate x batch size, one panel per optimizer
    (and value of other varying axes): each square a configuration's mean over ok seeds and its 95 %
    interval; a grey square names the status of runs that never finished."""
    metric = primary_metric(summary)
    axes = config_axes(summary)
    statuses = summary.groupby(axes, dropna=False)["status"].agg(lambda s: "/".join(sorted(set(s)))).rename("statuses")
    data = configurations(summary).merge(statuses.reset_index(), on=axes, how="left")
    data["text"] = data.apply(_square_text, axis=1)
    data["lr_label"] = data["lr"].map(lambda lr: format_value("lr", lr))
    middle = (data["mean"].min() + data["mean"].max()) / 2  # viridis is light above the middle
    data["ink"] = np.where(data["mean"].isna() | (data["mean"] >= middle), "black", "white")
    other = varying_axes(data, axes, exclude=("optimizer", "batch_size", "lr"))
    data, panels = with_panels(data, ["optimizer", *other])
    base = alt.Chart().encode(
        x=alt.X("lr_label:O", title="learning rate", sort=[format_value("lr", lr) for lr in sorted(data["lr"].unique())]),
        y=alt.Y("batch_size:O", title="batch size"),
        tooltip=["config:N", "mean:Q", "test_low:Q", "test_high:Q", "interval:N", "n_ok:Q", "statuses:N"])
    missing = base.mark_rect(color="#dddddd").transform_filter("datum.mean === null")
    coloured = base.mark_rect().encode(color=alt.Color("mean:Q", title=words(metric), scale=alt.Scale(scheme="viridis")))
    text = [base.mark_text(fontSize=10, color=ink, lineBreak="\n").encode(text="text:N").transform_filter(
        f"datum.ink === '{ink}'") for ink in ("black", "white")]
    chart = alt.layer(missing, coloured.transform_filter("datum.mean !== null"), *text, data=data).properties(
        width=WIDTH, height=HEIGHT)
    return wrap(chart, "panel", panels).properties(title=title(
        f"{words(metric).capitalize()} over learning rate and batch size",
        f"squares: {averaged([], int(data['n_ok'].max()))}", intervals_note(data, "in brackets")))


def trainable_layers_chart(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Test accuracy and macro F1 against the number of trainable layers, side by side: N for `last:N`
    (the head's layers included, as workflow.train.models counts them) or `keras:N`, 0 for `head` (the
    new head alone).

    One dot per ok run with its 95 % interval (accuracy: Wilson; macro F1: bootstrap), the line through
    each configuration's mean over seeds; other varying axes get a colour each.
    """
    ok = summary[summary["status"] == "ok"]
    data = ok.assign(layers=ok["train"].map(trainable_layers)).dropna(subset=["layers", "test_accuracy"])
    if data.empty:
        return placeholder("No run that trains the head or the last N layers finished.")
    data["layers"] = data["layers"].astype(int)
    other = varying_axes(data, axis_columns(summary), exclude=("train", "seed"))
    data, runs = with_runs(with_stop_labels(data) if halved(data) else data, other)
    encoding = {"color": alt.Color("runs:N", title=None, sort=runs, legend=LEGEND, scale=colours(len(runs)))} if runs else {}
    layers = alt.X("layers:Q", title="trainable layers (last:N with the head, or keras:N; 0 = head only)",
                   axis=alt.Axis(values=sorted(set(data["layers"]))))
    panels = []
    for metric in ("test_accuracy", "test_macro_f1"):
        base = alt.Chart(data).encode(x=layers, **encoding)
        if halved(data):  # a pruned run: an open dot
            dots = base.mark_point(shape="circle", size=40, opacity=0.8, filled=False).encode(
                **open_if_pruned(data, encoding.get("color", alt.Color("model:N", legend=None))))
        else:
            dots = base.mark_circle(size=40, opacity=0.6)
        y = alt.Y(f"{metric}:Q", title=words(metric), scale=alt.Scale(zero=False))
        dots = dots.encode(y=y, tooltip=["cell:N", "train:N", f"{metric}:Q", f"{metric}_low:Q", f"{metric}_high:Q",
                                         *halving_tooltip(data)])
        errors = base.mark_rule(opacity=0.5).encode(y=f"{metric}_low:Q", y2=f"{metric}_high:Q")
        means = base.mark_line(point=True).encode(y=f"mean({metric}):Q")
        panels.append((errors + dots + means).properties(width=WIDTH * 1.5, height=HEIGHT * 1.5))
    seeds = int(data.groupby([*other, "layers"])["cell"].count().max()) if len(data) else 1
    return alt.hconcat(*panels).properties(title=title(
        "Test accuracy and macro F1 by the number of trainable layers",
        "dots: one per run with its 95 % interval (accuracy: Wilson; macro F1: bootstrap); "
        f"line: {averaged([], seeds)} per configuration"))


def pareto_front(times: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Which points no other point beats on both time (lower) and score (higher)."""
    order = np.lexsort((-scores, times))
    front = np.zeros(len(times), dtype=bool)
    best = -np.inf
    for index in order:
        if scores[index] > best:
            front[index], best = True, scores[index]
    return front


def _time_points(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The ok runs with their regime, Pareto flags per dataset and short labels."""
    data = summary[summary["status"] == "ok"].dropna(subset=[metric, "train_time_s"]).copy()
    data["regime"] = [regime(w, f) for w, f in zip(data["weights"], data["train"])]
    data["pareto"] = False
    for _, group in data.groupby("dataset"):
        data.loc[group.index, "pareto"] = pareto_front(group["train_time_s"].to_numpy(float),
                                                       group[metric].to_numpy(float))
    named = varying_axes(data, axis_columns(summary), exclude=("dataset",))
    data["label"] = [short_label(row, named) for _, row in data.iterrows()]
    data["side"] = with_room(data, metric, WIDTH * 1.5, HEIGHT * 1.5)
    data["labelled"] = data["side"].notna()
    return with_stop_labels(data) if halved(data) else data


def with_room(data: pd.DataFrame, metric: str, width: float, height: float) -> pd.Series:
    """Where each point's label goes: `right` or `left` of it, or None where neither has room. Per panel
    (dataset), the Pareto front first and then the best, a label goes right of its point if its box (at
    the panel's pixel scale: time and the metric over their spans, its intervals included) stays inside
    the panel and overlaps no label placed before, else left of it on the same terms."""
    side = pd.Series(None, index=data.index, dtype=object)
    for _, panel in data.groupby("dataset"):
        values = panel[[column for column in (metric, f"{metric}_low", f"{metric}_high") if column in panel]]
        low, high = values.min().min(), values.max().max()
        times = panel["train_time_s"]
        xs = (times - times.min()) / ((times.max() - times.min()) or 1.0) * width
        ys = (high - panel[metric]) / ((high - low) or 1.0) * height
        boxes = []
        for index in panel.sort_values(["pareto", metric], ascending=False).index:
            size, top = CHARACTER_PX * len(panel.at[index, "label"]), ys[index] - 6 - LINE_PX / 2
            for where, left in (("right", xs[index] + 6), ("left", xs[index] - 6 - size)):
                box = (left, top, left + size, top + LINE_PX)
                inside = box[0] >= 0 and box[2] <= width
                if inside and all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in boxes):
                    boxes.append(box)
                    side[index] = where
                    break
    return side


def accuracy_vs_time(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """The primary metric against training time, one labelled dot per ok run with its 95 % interval, the
    Pareto front as a step line; one panel per dataset; colour by training regime when it varies, else
    by model."""
    metric = primary_metric(summary)
    data = _time_points(summary, metric)
    if data.empty:
        return placeholder("No run finished.")
    colour = "regime" if data["regime"].nunique() > 1 else "model"
    base = alt.Chart().encode(
        x=alt.X("train_time_s:Q", title="training time (s)", scale=alt.Scale(zero=False)),  # as with_room
        y=alt.Y(f"{metric}:Q", title=words(metric), scale=alt.Scale(zero=False)))
    colour_encoding = alt.Color(f"{colour}:N", title=words(colour) if colour == "model" else "training regime",
                                scale=colours(data[colour].nunique()))
    dots = base.mark_point(size=60, filled=not halved(data)).encode(
        color=colour_encoding, shape=alt.Shape("pareto:N", title="Pareto front"),
        tooltip=["cell:N", "label:N", f"{metric}:Q", f"{metric}_low:Q", f"{metric}_high:Q", "train_time_s:Q", "regime:N",
                 "pareto:N", *halving_tooltip(data)], **open_if_pruned(data, colour_encoding))
    errors = base.mark_rule(opacity=0.45).encode(y=f"{metric}_low:Q", y2=f"{metric}_high:Q", color=colour_encoding)
    names = [base.mark_text(align=align, dx=dx, dy=-6, fontSize=9, color="#333333").encode(text="label:N")
             .transform_filter(f"datum.side === '{side}'") for side, align, dx in (("right", "left", 6), ("left", "right", -6))]
    front = base.mark_line(interpolate="step-after", color="grey", strokeDash=[4, 3]).transform_filter(alt.datum.pareto)
    chart = alt.layer(front, errors, dots, *names, data=data).properties(width=WIDTH * 1.5, height=HEIGHT * 1.5)
    several = data["dataset"].nunique() > 1
    crowded = not data["labelled"].all()  # some label had no room
    return wrap(chart, "dataset" if several else None, sorted(data["dataset"].unique())).properties(title=title(
        f"{words(metric).capitalize()} against training time, one dot per run (not averaged)",
        f"vertical bars: 95 % {'DeLong' if metric == 'test_auc' else 'Wilson'} intervals; dashed: the Pareto front",
        f"labels: {'each run where there is room, the Pareto front first (every label in its tooltip)' if crowded else 'each run'}"))


def configs_chart(summary: pd.DataFrame, histories: pd.DataFrame) -> alt.Chart:
    """Each configuration's test metric (mean over seeds) with its 95 % interval, sorted by its rank on
    validation, coloured by its verdict against the configuration chosen on validation; one panel per
    dataset and model, in a grid."""
    configs = _ok_configs(summary)
    if configs.empty:
        return placeholder("No configuration has a finished run.")
    if "verdict" in summary and summary["verdict"].notna().any():  # the aggregate's: its selection, paired tests
        standing = summary.dropna(subset=["verdict"]).set_index("cell")[["rank", "verdict"]]
        first = configs["cells"].str.split().str[0]
        known = first.isin(standing.index)
        configs.loc[known, "rank"] = standing.loc[first[known], "rank"].to_numpy()
        configs.loc[known, "verdict"] = standing.loc[first[known], "verdict"].to_numpy()
    configs = configs.assign(panel=labels(configs, ["dataset", "model"]), verdict=configs["verdict"].fillna("untested"))
    metric = configs["metric"].iloc[0]
    base = alt.Chart().encode(
        y=alt.Y("config:N", title=None, sort=alt.EncodingSortField(field="rank", order="ascending"),
                axis=alt.Axis(labelLimit=400)))
    bars = base.mark_rule().encode(x=alt.X("test_low:Q", title=f"{words(metric)} (mean, 95 % interval)",
                                           scale=alt.Scale(zero=False)), x2="test_high:Q")
    dots = base.mark_point(filled=True, size=60).encode(
        x="mean:Q", color=alt.Color("verdict:N", title="against the chosen one",
                                    scale=alt.Scale(domain=list(VERDICTS), range=list(VERDICTS.values()))),
        tooltip=["config:N", "rank:Q", "val_mean:Q", "mean:Q", "test_low:Q", "test_high:Q", "interval:N", "n_ok:Q",
                 "n_runs:Q", "tests:N", "p_vs_best:Q"])
    chart = alt.layer(bars, dots, data=configs).properties(width=WIDTH * 1.5)
    panels = sorted(configs["panel"].unique())
    return wrap(chart, "panel", panels, columns=2).resolve_scale(y="independent").properties(title=title(
        f"{words(metric).capitalize()} of each configuration, top to bottom as validation ranked them",
        f"dots: {averaged([], int(configs['n_ok'].max()))}; {intervals_note(configs)}",
        "colour: the paired tests and Welch's test against the configuration chosen on validation"))
