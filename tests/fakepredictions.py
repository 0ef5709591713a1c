"""Test helpers: cells with hand-made per-image predictions (predictions.npz) next to their metrics.json
and history.csv, so that intervals, paired tests and warnings have known answers."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from fakecells import write_cell
from workflow.train.predictions import write_predictions


def labels(n: int, classes: int) -> np.ndarray:
    """n labels, the classes in turn (as balanced as n allows)."""
    return np.arange(n) % classes


def scores(labels: np.ndarray, correct: np.ndarray, classes: int, confidence: float = 0.9) -> np.ndarray:
    """Scores (rows sum to 1) whose top class is the label where `correct`, the next class otherwise."""
    predicted = np.where(correct, labels, (labels + 1) % classes)
    out = np.full((len(labels), classes), (1 - confidence) / (classes - 1))
    out[np.arange(len(labels)), predicted] = confidence
    return out


def binary_scores(positive: np.ndarray) -> np.ndarray:
    """Two-class scores from the positive class's score."""
    positive = np.asarray(positive, float)
    return np.column_stack([1 - positive, positive])


def mask(n: int, right: int, start: int = 0) -> np.ndarray:
    """n images of which `right` consecutive ones from `start` (wrapping) are right."""
    out = np.zeros(n, bool)
    out[(start + np.arange(right)) % n] = True
    return out


def write_run(study, cell, test_correct: np.ndarray, val_correct: np.ndarray, classes: int = 3,
              test_labels: np.ndarray | None = None, val_labels: np.ndarray | None = None,
              test_scores: np.ndarray | None = None, val_scores: np.ndarray | None = None, **metrics) -> dict:
    """Write a cell whose metrics.json agrees with its predictions: test accuracy and best validation
    accuracy are the shares of `test_correct` and `val_correct`, and with two classes test AUC is that of
    the scores, as training reports it. Scores default to `scores`."""
    test_labels = labels(len(test_correct), classes) if test_labels is None else test_labels
    val_labels = labels(len(val_correct), classes) if val_labels is None else val_labels
    test_scores = scores(test_labels, test_correct, classes) if test_scores is None else test_scores
    val_scores = scores(val_labels, val_correct, classes) if val_scores is None else val_scores
    classes = test_scores.shape[1]
    correct = test_scores.argmax(axis=1) == test_labels
    if classes == 2:
        metrics.setdefault("test_auc", roc_auc_score(test_labels, test_scores[:, 1]))
    metrics = {"test_accuracy": float(correct.mean()),
               "best_val_accuracy": float((val_scores.argmax(axis=1) == val_labels).mean()), **metrics}
    written = write_cell(study, cell, **metrics)
    write_predictions(study.cell_dir(cell.id) / "predictions.npz", val_scores, val_labels, test_scores, test_labels,
                      [f"class{k}" for k in range(classes)])
    return written
