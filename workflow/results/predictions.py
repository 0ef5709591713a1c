"""A cell's per-image predictions (`predictions.npz` in its folder): written by training, read back
by the aggregation for intervals, validation AUC and paired tests on the same test images.

The file holds `val_scores` and `test_scores` (float32, images x classes: the softmax of the best
checkpoint), `val_labels` and `test_labels` (int64) and `class_names` (strings).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflow.atomic import atomic_path
from workflow.results.inference import delong_interval, roc_auc, wilson_interval

PREDICTIONS = "predictions.npz"
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


def split_sizes(labels: np.ndarray, classes: int) -> tuple[int, int, float]:
    """Images in a split, its smallest class's count and its largest class's share."""
    counts = np.bincount(labels, minlength=classes)
    return int(len(labels)), int(counts.min()), float(counts.max() / len(labels)) if len(labels) else math.nan


def prediction_columns(predictions: Predictions) -> dict:
    """The summary columns a cell's predictions give: split sizes, the majority-class rate, validation
    AUC (two classes), and 95 % intervals of test accuracy (Wilson) and test AUC (DeLong)."""
    classes = len(predictions.class_names)
    n_val, val_smallest, _ = split_sizes(predictions.val_labels, classes)
    n_test, test_smallest, majority = split_sizes(predictions.test_labels, classes)
    low, high = wilson_interval(int(predictions.test_correct().sum()), n_test)
    columns = {"n_classes": classes, "n_val": n_val, "val_smallest_class": val_smallest, "n_test": n_test,
               "test_smallest_class": test_smallest, "test_majority_rate": majority,
               "test_accuracy_low": low, "test_accuracy_high": high}
    if predictions.binary:
        columns["val_auc"] = roc_auc(predictions.val_scores[:, 1], predictions.val_labels == 1)
        _, columns["test_auc_low"], columns["test_auc_high"] = delong_interval(
            predictions.test_scores[:, 1], predictions.test_labels == 1)
    return columns


def counts_columns(metrics: dict) -> dict:
    """What a metrics.json alone tells without predictions: the test split's size and class counts
    (from `per_class` supports) and the Wilson interval of its test accuracy."""
    supports = [entry.get("support") for entry in (metrics.get("per_class") or {}).values()]
    accuracy = metrics.get("test_accuracy")
    if not supports or None in supports or not sum(supports):
        return {}
    n_test = int(sum(supports))
    columns = {"n_classes": len(supports), "n_test": n_test, "test_smallest_class": int(min(supports)),
               "test_majority_rate": max(supports) / n_test}
    if accuracy is not None and math.isfinite(accuracy):
        columns["test_accuracy_low"], columns["test_accuracy_high"] = wilson_interval(round(accuracy * n_test), n_test)
    return columns


@dataclass(frozen=True)
class Outcome:
    """What a paired test needs of one run: per test image, whether it was right, and the positive
    class's score (two classes only); the labels say which images they are."""

    correct: np.ndarray
    positive: np.ndarray | None
    labels: np.ndarray


def outcome(predictions: Predictions) -> Outcome:
    return Outcome(predictions.test_correct(), predictions.test_scores[:, 1] if predictions.binary else None,
                   predictions.test_labels)


def load_outcomes(cell_dirs: dict) -> dict:
    """Outcomes by cell id, for the cells (id: folder) whose predictions can be read."""
    outcomes = {}
    for cell, folder in cell_dirs.items():
        try:
            predictions = read_predictions(folder)
        except ValueError:
            continue  # the summary's `predictions` column says why
        if predictions is not None:
            outcomes[cell] = outcome(predictions)
    return outcomes
