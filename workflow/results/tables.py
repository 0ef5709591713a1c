"""The study's tables (the summary, the best configurations, the configurations and the papers'
pivot tables), and writing each as CSV, Markdown, Parquet and HTML.

Pivot cells are means over the seeds whose status is `ok`; a blank cell means
no run of that combination finished (see `summary` for why).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from workflow.results.aggregate import axis_columns, format_value, labels, varying_axes
from workflow.atomic import atomic_path
from workflow.study.outputs import HISTORY_FORMATS, SWEEP_AXES, TABLE_FORMATS, regime, sweep_groups, trainable_layers
from workflow.results.stats import best_table, configurations, primary_metric

TIME_COLUMNS = ["train_time_s", "wall_time_s", "epochs_run", "images_per_s", "peak_memory_mb"]


def _ok(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["status"] == "ok"]


def _pivot(summary: pd.DataFrame, index: list[str], columns: list[str], metric: str) -> pd.DataFrame:
    """Mean of `metric` over ok runs; `columns` spread into one column each, labelled by their values."""
    frame = summary.assign(_column=labels(summary, columns) if len(columns) > 1 else
                           summary[columns[0]].map(lambda value: format_value(columns[0], value)))
    order = list(dict.fromkeys(frame.sort_values(columns)["_column"]))
    values = _ok(frame).groupby([*index, "_column"])[metric].mean().unstack("_column")
    every = frame[index].drop_duplicates().set_index(index).index
    table = values.reindex(index=every.sort_values(), columns=order)
    table.columns.name = None
    return table.reset_index()


def batch_size_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy with batch sizes as rows and datasets as columns (the batch-size paper's Table I)."""
    other = varying_axes(summary, axis_columns(summary), exclude=("batch_size", "dataset", "seed"))
    return _pivot(summary, ["batch_size"], ["dataset", *other], "test_accuracy")


def batch_lr_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The primary metric (AUC when there is one) by optimizer and batch size (rows) and learning rate (columns)."""
    metric = primary_metric(summary)
    other = varying_axes(summary, axis_columns(summary), exclude=("optimizer", "batch_size", "lr", "seed"))
    table = _pivot(summary, [*other, "optimizer", "batch_size"], ["lr"], metric)
    table.columns = [f"lr={column}" if i >= len(other) + 2 else column for i, column in enumerate(table.columns)]
    table.insert(0, "metric", metric)
    return table


def regimes_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and time per training regime (from scratch / frozen / fine-tuned / last N layers); for
    two classes also the positive class's recall and false-negative rate."""
    frame = summary.assign(regime=[regime(w, f) for w, f in zip(summary["weights"], summary["train"])])
    other = varying_axes(frame, axis_columns(summary), exclude=("dataset", "model", "weights", "train", "seed"))
    keys = ["dataset", "model", *other, "regime"]
    runs = frame.groupby(keys, sort=True).agg(n_runs=("cell", "size"))
    ok = _ok(frame).groupby(keys, sort=True)
    binary = {column: (column, "mean") for column in ("test_recall", "test_fnr")
              if column in frame and frame[column].notna().any()}
    table = runs.join(ok.agg(
        n_ok=("cell", "size"),
        test_accuracy=("test_accuracy", "mean"), test_accuracy_sd=("test_accuracy", "std"), **binary,
        trainable_parameters=("trainable_parameters", "max"),
        **{f"mean_{column}": (column, "mean") for column in TIME_COLUMNS},
    ))
    table["n_ok"] = table["n_ok"].fillna(0).astype(int)
    return table.reset_index()


SWEEP_METRICS = ["best_val_accuracy", "test_accuracy", "test_accuracy_low", "test_accuracy_high", "test_macro_f1",
                 "test_macro_f1_low", "test_macro_f1_high"]
# two classes: the positive class's recall and false-negative rate (1 - recall, so its interval is 1 - recall's)
SWEEP_BINARY = ["positive_class", "test_recall", "test_recall_low", "test_recall_high", "test_fnr", "test_fnr_low",
                "test_fnr_high"]


def _sweep_order(axis: str, value):
    """Sorts a sweep's values: numbers by size, `train` by its layers (head first, then keras:15 before
    keras:100), the rest by name."""
    if axis == "train":
        layers = trainable_layers(value)
        return (math.inf if layers is None else layers, str(value))
    return (value, "") if isinstance(value, (int, float)) else (math.inf, str(value))


def sweeps_table(summary: pd.DataFrame) -> pd.DataFrame:
    """A study of sub-grids, one sweep at a time: per axis swept with everything else fixed (`fixed`: the
    sweep's values on the other varying axes), one row per cell with its validation accuracy, test
    accuracy and macro F1 with their 95 % intervals, and for two classes the positive class's recall and
    false-negative rate with theirs. Runs are not averaged: each row is one cell."""
    axes = axis_columns(summary)
    records = summary[axes].to_dict("records")
    frame = summary.assign(test_fnr_low=1 - summary["test_recall_high"], test_fnr_high=1 - summary["test_recall_low"])
    binary = SWEEP_BINARY if frame["test_recall"].notna().any() else []
    rows = []
    for axis in [axis for axis in SWEEP_AXES if axis in axes]:
        for members in sweep_groups(records, axis):
            group = frame.iloc[members]
            fixed = varying_axes(summary, axes, exclude=(axis, "seed"))
            label = labels(group.iloc[:1], fixed).iloc[0]
            ordered = sorted(members, key=lambda i: (_sweep_order(axis, records[i][axis]), records[i].get("seed", 0)))
            for i in ordered:
                row = frame.iloc[i]
                rows.append({"sweep": axis, "fixed": label, "value": format_value(axis, row[axis]), "seed": row["seed"],
                             "cell": row["cell"], "status": row["status"],
                             **{column: row[column] for column in [*SWEEP_METRICS, *binary]}})
    return pd.DataFrame(rows, columns=["sweep", "fixed", "value", "seed", "cell", "status", *SWEEP_METRICS, *binary])


def halving_table(summary: pd.DataFrame, histories: pd.DataFrame, rungs: tuple[int, ...]) -> pd.DataFrame:
    """Successive halving's ladder: per rung (and Hyperband bracket, where the study has several) its
    budget, the cells that reached it, went on and stopped there, and the epochs trained in it (counted
    from the histories)."""
    brackets = summary["bracket"].fillna(0).astype(int) if "bracket" in summary else pd.Series(0, summary.index)
    reached = summary["rung"].astype("Int64")
    of_cell = dict(zip(summary["cell"], brackets))
    trained = histories.assign(bracket=histories["cell"].map(of_cell)) if "epoch_rung" in histories else None
    rows = []
    for bracket in sorted(set(brackets)):
        own = reached[brackets == bracket].dropna().astype(int)
        epochs = trained[trained["bracket"] == bracket]["epoch_rung"].value_counts() if trained is not None \
            else pd.Series(dtype=int)
        rows += [{"bracket": bracket, "rung": k, "budget_epochs": budget, "cells": int((own >= k).sum()),
                  "went_on": int((own > k).sum()), "stopped": int((own == k).sum()),
                  "epochs_trained": int(epochs.get(k, 0))} for k, budget in enumerate(rungs) if k >= bracket]
    columns = ["rung", "budget_epochs", "cells", "went_on", "stopped", "epochs_trained"]
    table = pd.DataFrame(rows, columns=["bracket", *columns])
    return table if "bracket" in summary else table[columns]


TABLES = {  # name: table from the summary, its configurations, the histories and the halving rungs
    "summary": lambda summary, configs, histories, rungs: with_standing(summary, configs),
    "best": lambda summary, configs, histories, rungs: best_table(configs),
    "configs": lambda summary, configs, histories, rungs: configs,
    "batch_size": lambda summary, configs, histories, rungs: batch_size_table(summary),
    "batch_lr": lambda summary, configs, histories, rungs: batch_lr_table(summary),
    "regimes": lambda summary, configs, histories, rungs: regimes_table(summary),
    "sweeps": lambda summary, configs, histories, rungs: sweeps_table(summary),
    "halving": lambda summary, configs, histories, rungs: halving_table(summary, histories, rungs),
}


def finalists(summary: pd.DataFrame) -> pd.DataFrame:
    """The cells that trained their whole budget: in a halving study those not pruned, else all."""
    if "pruned" not in summary:
        return summary
    return summary[~summary["pruned"].fillna(False).astype(bool)]  # a cell that never finished stays, as failed


def with_standing(summary: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """The summary with each ok cell's configuration's `rank` and `verdict` within its dataset and model."""
    standing = {cell: (row["rank"], row["verdict"]) for _, row in configs.iterrows() for cell in row["cells"].split()}
    ranks = summary["cell"].map(lambda cell: standing.get(cell, (pd.NA, None))[0])
    verdicts = summary["cell"].map(lambda cell: standing.get(cell, (pd.NA, None))[1])
    return summary.assign(rank=ranks.astype("Int64"), verdict=verdicts.astype(object))


def build_tables(names: list[str], summary: pd.DataFrame, histories: pd.DataFrame | None = None,
                 rungs: tuple[int, ...] = (), selection: str | None = None,
                 outcomes: dict | None = None) -> dict[str, pd.DataFrame]:
    """The named tables (see workflow.study.outputs.study_tables) from the summary (and for `halving` the
    histories and the rungs' budgets). Configurations are ranked on `selection` (the study's setting) and
    compared on the test images where `outcomes` (workflow.results.aggregate.collect_cells) has them.
    In a halving study the configurations, and so the best one, are those of the finalists: a pruned
    cell stopped at a smaller budget."""
    return tables_from(names, summary, configurations(finalists(summary), selection, outcomes), histories, rungs)


def tables_from(names: list[str], summary: pd.DataFrame, configs: pd.DataFrame, histories: pd.DataFrame | None,
                rungs: tuple[int, ...] = ()) -> dict[str, pd.DataFrame]:
    """The named tables from the summary and its configurations (workflow.results.stats.configurations)."""
    histories = pd.DataFrame() if histories is None else histories
    return {name: TABLES[name](summary, configs, histories, rungs) for name in names}


def for_display(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as Markdown and HTML show it: without the columns empty in every row (CSV and Parquet
    keep them), learning rates written as 1e-3 (a float format would round them away)."""
    if len(frame):
        frame = frame.loc[:, frame.notna().any()]
    if "lr" not in frame:
        return frame
    return frame.assign(lr=frame["lr"].map(lambda lr: format_value("lr", lr)))


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table, floats to 4 decimals, missing values as blanks."""
    frame = for_display(frame)
    text = [i for i, dtype in enumerate(frame.dtypes) if not pd.api.types.is_numeric_dtype(dtype)]
    return frame.astype(object).where(frame.notna(), None).to_markdown(
        index=False, floatfmt=".4f", missingval="", disable_numparse=text if len(frame) else False)


def html_page(frame: pd.DataFrame, title: str, above: str = "") -> str:
    """A small self-contained HTML page showing the table (what the Snakemake report embeds), with the
    HTML `above` before it."""
    table = for_display(frame).to_html(index=False, na_rep="", float_format=lambda value: f"{value:.4f}", border=0)
    style = ("body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}th{background:#f4f4f4}"
             ".warning{color:#8a4b00}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{above}{table}\n</body></html>\n")


def write_table(frame: pd.DataFrame, out_dir: str | Path, name: str, formats=TABLE_FORMATS,
                preamble: tuple[str, str] | None = None) -> None:
    """Write `<out_dir>/<name>.<format>` for each format, atomically; `preamble` (Markdown, HTML) goes
    above the table in the .md and .html files."""
    above_md, above_html = preamble or ("", "")
    writers = {
        "csv": lambda tmp: frame.to_csv(tmp, index=False),
        "md": lambda tmp: tmp.write_text(above_md + markdown(frame) + "\n"),
        "parquet": lambda tmp: frame.to_parquet(tmp, index=False),
        "html": lambda tmp: tmp.write_text(html_page(frame, name, above_html)),
    }
    for fmt in formats:
        with atomic_path(Path(out_dir) / f"{name}.{fmt}") as tmp:
            writers[fmt](tmp)


def write_histories(histories: pd.DataFrame, out_dir: str | Path) -> None:
    """Write the long per-epoch table (CSV and Parquet only)."""
    write_table(histories, out_dir, "histories", HISTORY_FORMATS)
