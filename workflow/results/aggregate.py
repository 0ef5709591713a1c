"""Collect every grid cell's metrics.json, history.csv and predictions.npz into study-wide tables: the
summary (one row per cell, with 95 % intervals and split sizes) and the histories (one row per epoch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from workflow.results.predictions import (Outcome, counts_columns, outcome, positive_columns, positive_index,
                                          prediction_columns)
from workflow.train.predictions import read_predictions
from workflow.core import paths
from workflow.core.cell import Cell, format_lr
from workflow.integrity import read_metrics
from workflow.study.grid import AXES, Study

# The summary's columns after the cell id and its axes, in order, with their
# types: the one list of what a summary holds. A key that a metrics.json lacks
# becomes NaN; best_val_loss comes from history.csv (val_loss at the best epoch).
# The intervals, split sizes and validation AUC come from the cell's predictions.npz
# (workflow.results.predictions; `predictions` says whether it was there); `rank` and `verdict`
# are its configuration's place, filled in by workflow.results.tables.build_tables.
METRICS = {
    "status": "object", "error": "object",
    "test_accuracy": "float", "test_accuracy_low": "float", "test_accuracy_high": "float",
    "test_top5_accuracy": "float", "test_auc": "float", "test_auc_low": "float", "test_auc_high": "float",
    "test_loss": "float", "test_macro_f1": "float", "test_macro_f1_low": "float", "test_macro_f1_high": "float",
    # two classes: the positive class (`positive_class`, else the second) and its recall and false-negative rate
    "positive_class": "object", "test_recall": "float", "test_recall_low": "float", "test_recall_high": "float",
    "test_fnr": "float",
    "best_val_accuracy": "float", "best_val_loss": "float", "val_auc": "float",
    "epochs_run": "Int64", "best_epoch": "Int64", "diverged_epoch": "Int64",
    "trainable_parameters": "Int64",  # what the cell's last stage trained (metrics.json's stages)
    "wall_time_s": "float", "train_time_s": "float", "images_per_s": "float", "peak_memory_mb": "float",
    "micro_batch_size": "Int64",  # set only where training.oom_micro_batches split the batches
    "device": "object",
    "n_classes": "Int64", "n_val": "Int64", "val_smallest_class": "Int64", "n_test": "Int64",
    "test_smallest_class": "Int64", "test_majority_rate": "float", "predictions": "object",
    "rank": "Int64", "verdict": "object",
}
# A cell `ok` whose best checkpoint's validation or test loss is not finite or above this many times
# the loss of a uniform guess (ln of the number of classes) is `unstable`: its scores are not to be trusted.
EXPLODING = 10.0
# The status of a cell whose metrics.json cannot be read, or whose history.csv is gone: listed, never dropped.
DAMAGED = "damaged"
# Per-epoch history columns renamed so they do not clash with the cell's axes.
HISTORY_RENAMES = {"lr": "epoch_lr", "train": "stage_train"}
# A halving study's summary has these columns too (after the metrics): the rung where a cell stopped
# (from 0), its budget in epochs, and whether it stopped before the last rung. Its histories say each
# epoch's rung (`epoch_rung`, `rung_budget`) and whether the cell was pruned.
HALVING_COLUMNS = {"rung": "Int64", "budget_epochs": "Int64", "pruned": "boolean"}


def halving_columns(study: Study) -> dict:
    """A study's halving columns and their types: none without halving, the bracket with several."""
    if study.halving is None:
        return {}
    return {**HALVING_COLUMNS, "bracket": "Int64"} if study.halving.brackets > 1 else HALVING_COLUMNS


def extra_axes(study: Study) -> list[str]:
    """Swept `training` keys (grid.training) that some grid cell sets: extra axes beyond AXES."""
    return sorted({key for cell in study.grid_cells for key in cell.params})


def axis_values(cell: Cell, extras: list[str]) -> dict:
    """A cell's value on every axis; an extra axis takes the cell's own training value."""
    values = {axis: getattr(cell, axis) for axis in AXES}
    for key in extras:
        value = getattr(cell.training, key)
        values[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)
    return values


def axis_columns(summary: pd.DataFrame) -> list[str]:
    """The summary's axis columns: every column but the cell id, the metrics and the halving columns."""
    return [column for column in summary.columns
            if column != "cell" and column not in METRICS and column not in {*HALVING_COLUMNS, "bracket"}]


def last_line(path: Path) -> str | None:
    """The last non-empty line of a text file, or None when there is none."""
    if not path.exists():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else None


def train_log(study: Study, cell_id: str) -> Path:
    """A cell's training log; for a grid cell of a halving study, the log of the last rung it started."""
    if cell_id not in study.grid_ids:
        return Path(paths.upstream_log(study.out, cell_id))
    if study.halving is not None:
        logs = [Path(paths.rung_log(study.out, cell_id, k)) for k in range(len(study.halving.rungs))]
        return next((log for log in reversed(logs) if log.exists()), logs[0])
    return Path(paths.cell_log(study.out, cell_id))


def epoch_rungs(epochs: pd.Series, rungs: tuple[int, ...]) -> pd.Series:
    """The rung each epoch was trained in: the first whose budget covers it."""
    return epochs.map(lambda epoch: next(k for k, budget in enumerate(rungs) if epoch <= budget or k == len(rungs) - 1))


def prediction_summary(folder: Path, metrics: dict,
                       positive: tuple[str, str | None] | None = None) -> tuple[dict, Outcome | None]:
    """The summary columns from a cell's predictions.npz, or what its metrics.json's class counts give
    when it has none (`predictions` says which: `yes`, `missing` or why the file is unreadable), and the
    test outcomes that paired tests compare (None without the file): the file is read once.
    `positive`: (dataset, its `positive_class` or None), for a two-class dataset's recall columns."""
    try:
        predictions = read_predictions(folder)
    except ValueError as error:
        return {**counts_columns(metrics), "predictions": f"unreadable: {error}"}, None
    if predictions is None:
        return {**counts_columns(metrics), "predictions": "missing"}, None
    columns = prediction_columns(predictions)
    if predictions.binary and positive is not None:
        columns.update(positive_columns(predictions, positive_index(predictions, positive[1], positive[0])))
    return {**columns, "predictions": "yes"}, outcome(predictions)


def last_stage_trainable(metrics: dict) -> int | None:
    """The parameters a cell's last stage trained, from metrics.json's `stages`; None when not recorded."""
    stages = metrics.get("stages")
    if not isinstance(stages, list) or not stages or not isinstance(stages[-1], dict):
        return None
    return stages[-1].get("trainable_parameters")


def instability(row: dict, history: pd.DataFrame | None) -> str | None:
    """Why a cell's losses cannot be trusted: its validation loss is not finite in some epoch, or its
    test loss (the best weights') is not finite or above EXPLODING x ln(classes); None when they are
    fine. (A validation loss that spikes while batch-norm statistics catch up does not count.)"""
    classes = int(row["n_classes"]) if row.get("n_classes") else 2
    limit = EXPLODING * math.log(max(classes, 2))
    test_loss = row.get("test_loss")
    if history is not None and "val_loss" in history:
        for epoch, value in zip(history["epoch"], history["val_loss"]):
            if not math.isfinite(float(value)):
                return f"unstable: validation loss at epoch {epoch} is {value}"
    if test_loss is None:
        return None  # not reported: no test pass
    test_loss = float(test_loss)
    if not math.isfinite(test_loss):
        return f"unstable: test loss is {test_loss}"
    if test_loss > limit:
        return (f"unstable: test loss is {test_loss:.6g}, above {limit:.3g} ({EXPLODING:g} x ln {classes}, "
                f"ln {classes} being the loss of a uniform guess)")
    return None


def ended_early(metrics: dict) -> str | None:
    """Why a diverged or out-of-memory cell stopped, in words (its metrics.json has no `error`)."""
    if metrics["status"] == "diverged":
        return f"training loss not finite at epoch {metrics.get('diverged_epoch')}"
    if metrics["status"] == "oom":
        where = metrics.get("oom") or {}
        return "out of memory" + (f" in {where.get('phase')} at epoch {where.get('epoch')}, batch size "
                                  f"{where.get('batch_size')}" if where else "")
    return None


def read_cell(study: Study, cell: Cell, extras: list[str]) -> tuple[dict, pd.DataFrame | None, Outcome | None]:
    """A cell's summary row, its history and its test outcomes; a cell without metrics.json is `failed`,
    error from its log; one whose metrics.json cannot be read, or without the history.csv its trained
    epochs need, is `damaged`, error naming the file; an `ok` cell whose losses exploded is `unstable`."""
    row = {"cell": cell.id, **axis_values(cell, extras)}
    folder = study.cell_dir(cell.id)
    metrics, damage = read_metrics(folder)
    if damage:
        return {**row, "status": DAMAGED, "error": damage}, None, None
    if metrics is None:
        log_line = last_line(train_log(study, cell.id))
        error = f"no metrics.json; the log ends: {log_line}" if log_line else "no metrics.json and no log: not run"
        return {**row, "status": "failed", "error": error}, None, None
    row.update({name: metrics.get(name) for name in METRICS})
    row["error"] = row["error"] or ended_early(metrics)
    row["trainable_parameters"] = last_stage_trainable(metrics)
    if study.halving is not None:
        row.update({name: metrics.get(name) for name in halving_columns(study)})
    columns, outcomes = prediction_summary(folder, metrics, (cell.dataset, study.positive_classes.get(cell.dataset)))
    row.update(columns)
    history_file = folder / paths.HISTORY_CSV
    history = pd.read_csv(history_file) if history_file.exists() else None
    if history is None and metrics.get("epochs_run"):
        return {**row, "status": DAMAGED, "error": f"{history_file} is missing; run again to redo the cell"}, \
            None, None
    if row["status"] == "ok" and (reason := instability(row, history)):
        row.update(status="unstable", error=reason)
    if history is not None and len(history):
        best = history.loc[history["epoch"] == row["best_epoch"], "val_loss"]
        row["best_val_loss"] = float(best.iloc[0]) if len(best) else None
        history = history.rename(columns=HISTORY_RENAMES)
        history["best"] = history["epoch"] == row["best_epoch"]
        history["stopped"] = history["epoch"] == history["epoch"].max()
        if study.halving is not None:
            history["epoch_rung"] = epoch_rungs(history["epoch"], study.halving.rungs)
            history["rung_budget"] = history["epoch_rung"].map(lambda k: study.halving.rungs[k])
            history["pruned"] = metrics.get("pruned")
        identity = {"cell": cell.id, **axis_values(cell, extras)}
        history = pd.concat([pd.DataFrame([identity] * len(history)), history], axis=1)
    return row, history, outcomes


def collect(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary (one row per grid cell) and histories (one row per cell and epoch) of a study."""
    return collect_cells(study)[:2]


def collect_cells(study: Study) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The summary and histories of `collect`, and the test outcomes of its `ok` cells, by cell id."""
    extras = extra_axes(study)
    rows, histories, outcomes = [], [], {}
    for cell in study.grid_cells:
        row, history, outcome_of_cell = read_cell(study, cell, extras)
        rows.append(row)
        if outcome_of_cell is not None and row["status"] == "ok":
            outcomes[cell.id] = outcome_of_cell
        if history is not None and len(history):
            histories.append(history)
    halving = halving_columns(study)
    summary = pd.DataFrame(rows, columns=["cell", *AXES, *extras, *METRICS, *halving])
    for column, dtype in METRICS.items():
        if dtype != "object":
            summary[column] = pd.to_numeric(summary[column], errors="coerce").astype(dtype)
    for column, dtype in halving.items():
        summary[column] = summary[column].astype(dtype)
    history_columns = ["cell", *AXES, *extras]
    histories = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(columns=history_columns)
    return summary, histories, outcomes


def varying_axes(frame: pd.DataFrame, axes: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """The axes among `axes` that take more than one value in `frame`, minus `exclude`."""
    return [axis for axis in axes if axis not in exclude and frame[axis].nunique(dropna=False) > 1]


def format_value(axis: str, value) -> str:
    """An axis value as a short label: learning rates as 1e-3, the rest as they are."""
    if axis == "lr" and isinstance(value, float) and math.isfinite(value):
        return format_lr(value)
    return str(value)


def labels(frame: pd.DataFrame, axes: list[str], empty: str = "") -> pd.Series:
    """One label per row naming its values on `axes`, e.g. 'batch_size=64 optimizer=adam'. Read column by
    column: a row of an integer and a float axis would make 64 a float (`batch_size=64.0`)."""
    if not axes:
        return pd.Series(empty, index=frame.index, dtype=object)
    rows = zip(*(frame[axis].tolist() for axis in axes))
    return pd.Series([" ".join(f"{axis}={format_value(axis, value)}" for axis, value in zip(axes, row)) for row in rows],
                     index=frame.index, dtype=object)
