"""A cell's per-image predictions, `predictions.npz` in its folder: the class scores of the best
checkpoint on the validation and test splits (float32, images x classes), their labels (int64) and
the class names. Written by training, read by the results for intervals and paired tests.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflow.atomic import atomic_path
from workflow.core import paths

PREDICTIONS = paths.PREDICTIONS_NPZ
KEYS = ("val_scores", "val_labels", "test_scores", "test_labels", "class_names")


@dataclass(frozen=True)
class Predictions:
    """One cell's class scores and labels on its validation and test splits."""

    val_scores: np.ndarray
    val_labels: np.ndarray
    test_scores: np.ndarray
    test_labels: np.ndarray
    class_names: np.ndarray

    @property
    def binary(self) -> bool:
        return len(self.class_names) == 2

    def test_correct(self) -> np.ndarray:
        """Per test image: whether the highest score is its label's."""
        return self.test_scores.argmax(axis=1) == self.test_labels


def write_predictions(path: str | Path, val_scores, val_labels, test_scores, test_labels, class_names) -> None:
    """Write a cell's predictions.npz atomically (compressed; scores as float32, labels as int64)."""
    arrays = {
        "val_scores": np.asarray(val_scores, dtype=np.float32), "val_labels": np.asarray(val_labels, dtype=np.int64),
        "test_scores": np.asarray(test_scores, dtype=np.float32),
        "test_labels": np.asarray(test_labels, dtype=np.int64), "class_names": np.asarray(class_names, dtype=str),
    }
    _check(arrays)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _check(arrays: dict) -> None:
    """Raise ValueError unless scores are images x classes and labels one per image, within range."""
    classes = len(arrays["class_names"])
    for split in ("val", "test"):
        scores, labels = arrays[f"{split}_scores"], arrays[f"{split}_labels"]
        if scores.ndim != 2 or scores.shape[1] != classes:
            raise ValueError(f"{split}_scores has shape {scores.shape}, not (images, {classes} classes)")
        if labels.shape != (scores.shape[0],):
            raise ValueError(f"{split}_labels has shape {labels.shape}, not ({scores.shape[0]},)")
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"{split}_labels has labels outside 0..{classes - 1}")


def read_predictions(cell_dir: str | Path) -> Predictions | None:
    """A cell's predictions, or None when its folder has no predictions.npz; ValueError when the file
    cannot be read or its arrays do not fit together."""
    path = Path(cell_dir) / PREDICTIONS
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in KEYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: {type(error).__name__}: {error}") from None
    _check(arrays)
    return Predictions(**arrays)
