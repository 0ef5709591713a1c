"""Our metrics against sklearn.metrics on the same predictions."""

import numpy as np
import pytest
import sklearn.metrics as skm

from workflow.train.metrics import average_ranks, classification_report


@pytest.mark.parametrize("num_classes", [3, 10])
def test_report_matches_sklearn(num_classes):
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, 400)
    scores = rng.random((400, num_classes))
    scores[np.arange(400), labels] += rng.random(400)  # better than chance, not perfect
    names = [f"c{i}" for i in range(num_classes)]
    report = classification_report(scores, labels, names)
    predictions = scores.argmax(1)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert np.array_equal(report["confusion_matrix"], skm.confusion_matrix(labels, predictions, labels=range(num_classes)))
    p, r, f, s = skm.precision_recall_fscore_support(labels, predictions, labels=range(num_classes), zero_division=0)
    for i, name in enumerate(names):
        assert report["per_class"][name]["precision"] == pytest.approx(p[i])
        assert report["per_class"][name]["recall"] == pytest.approx(r[i])
        assert report["per_class"][name]["f1"] == pytest.approx(f[i])
        assert report["per_class"][name]["support"] == s[i]
    assert report["macro_f1"] == pytest.approx(skm.f1_score(labels, predictions, average="macro", zero_division=0))
    if num_classes > 5:
        assert report["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(labels, scores, k=5))


def test_class_never_predicted_has_zero_precision():
    labels = np.array([0, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 1]]
    report = classification_report(scores, labels, ["a", "b", "c"])
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_binary_roc_auc_and_false_negative_rate_match_sklearn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    positive = np.round(rng.random(300) * 0.6 + labels * 0.3, 2)  # rounded: many tied scores
    scores = np.stack([1 - positive, positive], axis=1)
    report = classification_report(scores, labels, ["negative", "positive"])
    assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, positive))
    tn, fp, fn, tp = skm.confusion_matrix(labels, scores.argmax(1)).ravel()
    assert report["false_negative_rate"] == pytest.approx(fn / (fn + tp))
    assert "roc_auc" not in classification_report(np.eye(3)[labels], labels, ["a", "b", "c"])
    assert classification_report(scores[labels == 1], labels[labels == 1], ["n", "p"])["roc_auc"] is None


def test_average_ranks_are_scipys_rankdata_ties_included():
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    for values in (rng.integers(0, 3, 200).astype(np.float32), rng.random(50), np.array([]), np.array([0.5])):
        np.testing.assert_array_equal(average_ranks(values), rankdata(values))
