"""A cell's history.csv: one row per epoch (stage, learning rate, training and validation loss and
accuracy, time); written after every epoch and once the cell is complete. Imports no torch."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from workflow.atomic import atomic_path

if TYPE_CHECKING:
    from workflow.train.loop import EpochResult

HISTORY_COLUMNS = [
    "epoch", "stage", "train", "lr", "train_loss", "train_accuracy",
    "val_loss", "val_accuracy", "seconds", "images_per_s",
]


def history_row(epoch: int, stage: dict, lr: float, result: EpochResult, val_loss: float,
                val_accuracy: float) -> dict:
    """One epoch's row: `stage` is its resolved settings, `result` its training pass."""
    return {
        "epoch": epoch, "stage": stage["name"], "train": stage["train"], "lr": lr,
        "train_loss": result.loss, "train_accuracy": result.accuracy,
        "val_loss": val_loss, "val_accuracy": val_accuracy,
        "seconds": round(result.seconds, 4), "images_per_s": round(result.images / result.seconds, 1),
    }


def write_history(path: Path, rows: list[dict]) -> None:
    """One CSV row per epoch, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
