"""Collect every cell's metrics and history into study-wide tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from workflow.atomic import atomic_path

AXES = ["dataset", "model", "resolution", "batch_size", "lr", "optimizer", "freeze", "seed", "weights"]
METRICS = [
    "status", "test_accuracy", "test_top5_accuracy", "test_loss", "test_macro_f1", "best_val_accuracy",
    "epochs_run", "best_epoch", "diverged_epoch", "wall_time_s", "train_time_s", "images_per_s", "device",
]


def summary_row(metrics: dict) -> dict:
    """One summary row: the cell id, its axis values and its headline metrics."""
    config = metrics["config"]
    return {"cell": metrics["cell"], **{axis: config[axis] for axis in AXES},
            **{name: metrics.get(name) for name in METRICS}}


def collect(metrics_files: list[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary (one row per cell) and histories (one row per cell and epoch) tables."""
    rows, histories = [], []
    for path in map(Path, metrics_files):
        metrics = json.loads(path.read_text())
        row = summary_row(metrics)
        rows.append(row)
        history = pd.read_csv(path.with_name("history.csv"))
        history = history.assign(**{column: row[column] for column in ["cell", *AXES]})
        history["best_epoch"] = history["epoch"] == row["best_epoch"]
        histories.append(history)
    summary = pd.DataFrame(rows, columns=["cell", *AXES, *METRICS])
    return summary, pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
