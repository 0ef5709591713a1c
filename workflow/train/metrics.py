"""Classification metrics from predicted scores, with numpy only (no sklearn or scipy: a training job
imports neither)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing their average rank (scipy's `rankdata`)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # where each run of equal values begins
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)
    return ranks


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose label is among the k highest scores."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def roc_auc(positive_scores: np.ndarray, is_positive: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive outranks a random negative
    (ties count half); None when one of the two classes is absent."""
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(positive_scores)
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_report(scores: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, top-5 accuracy (more than 5 classes), per-class precision/recall/F1, the confusion
    matrix, and for two classes ROC AUC and the false-negative rate (the second class is positive)."""
    num_classes = len(class_names)
    predictions = scores.argmax(axis=1)
    confusion = confusion_matrix(labels, predictions, num_classes)
    true_pos = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(true_pos, actual, out=np.zeros(num_classes), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_classes), where=denom > 0)
    report = {
        "accuracy": float(np.mean(predictions == labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, actual)
        },
        "macro_f1": float(f1.mean()),
        "confusion_matrix": confusion.tolist(),
    }
    if num_classes > 5:
        report["top5_accuracy"] = top_k_accuracy(scores, labels, 5)
    if num_classes == 2:
        report["roc_auc"] = roc_auc(scores[:, 1], labels == 1)
        report["false_negative_rate"] = float(1 - recall[1]) if actual[1] > 0 else None
    return report
