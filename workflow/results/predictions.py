"""What the results make of a cell's predictions.npz (workflow/train/predictions.py): split sizes,
validation AUC, test intervals, and the per-image outcomes that paired tests compare."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workflow.results.inference import delong_auc, delong_interval, macro_f1_interval, wilson_interval
from workflow.train.predictions import Predictions


def split_sizes(labels: np.ndarray, classes: int) -> tuple[int, int, float]:
    """Images in a split, its smallest class's count and its largest class's share."""
    counts = np.bincount(labels, minlength=classes)
    return int(len(labels)), int(counts.min()), float(counts.max() / len(labels)) if len(labels) else math.nan


def prediction_columns(predictions: Predictions) -> dict:
    """The summary columns a cell's predictions give: split sizes, the majority-class rate, validation
    AUC (two classes), and 95 % intervals of test accuracy (Wilson), test AUC (DeLong) and test macro F1
    (bootstrap)."""
    classes = len(predictions.class_names)
    n_val, val_smallest, _ = split_sizes(predictions.val_labels, classes)
    n_test, test_smallest, majority = split_sizes(predictions.test_labels, classes)
    low, high = wilson_interval(int(predictions.test_correct().sum()), n_test)
    columns = {"n_classes": classes, "n_val": n_val, "val_smallest_class": val_smallest, "n_test": n_test,
               "test_smallest_class": test_smallest, "test_majority_rate": majority,
               "test_accuracy_low": low, "test_accuracy_high": high}
    columns["test_macro_f1_low"], columns["test_macro_f1_high"] = macro_f1_interval(
        predictions.test_labels, predictions.test_scores.argmax(axis=1), classes)
    if predictions.binary:
        columns["val_auc"] = delong_auc(predictions.val_scores[:, 1], predictions.val_labels == 1)
        _, columns["test_auc_low"], columns["test_auc_high"] = delong_interval(
            predictions.test_scores[:, 1], predictions.test_labels == 1)
    return columns


def positive_index(predictions: Predictions, positive: str | None, dataset: str) -> int:
    """The index of a two-class dataset's positive class: `positive_class.<dataset>` by name, else the
    second class; a name that is not one of its classes is an error naming the key."""
    names = [str(name) for name in predictions.class_names]
    if positive is None:
        return 1
    if str(positive) not in names:
        raise ValueError(f"positive_class.{dataset}: {positive!r} is not a class of {dataset}; its classes are {names}")
    return names.index(str(positive))


def positive_columns(predictions: Predictions, positive: int) -> dict:
    """A two-class test split seen from its positive class: the class, the recall (sensitivity) with its
    95 % Wilson interval, and the false-negative rate (1 - recall). (ROC AUC does not depend on which
    class is positive: the two classes' scores sum to 1.)"""
    is_positive = predictions.test_labels == positive
    found = int((predictions.test_scores[is_positive].argmax(axis=1) == positive).sum())
    total = int(is_positive.sum())
    if total == 0:
        return {"positive_class": str(predictions.class_names[positive])}
    low, high = wilson_interval(found, total)
    return {"positive_class": str(predictions.class_names[positive]), "test_recall": found / total,
            "test_recall_low": low, "test_recall_high": high, "test_fnr": 1 - found / total}


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
