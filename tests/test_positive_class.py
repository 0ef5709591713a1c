"""The positive class of a two-class dataset: recall and false-negative rate in the summary."""

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from fakecells import make_study, study_config
from fakepredictions import write_run
from workflow.results.aggregate import collect
from workflow.results.inference import wilson_interval
from workflow.study.config import ConfigError
from workflow.study.grid import build_study


def binary_run(tmp_path, positive=None):
    config = study_config(tmp_path)
    if positive is not None:
        config["positive_class"] = {"d1": positive}
    study = build_study(config)
    rng = np.random.default_rng(0)
    test_labels = np.repeat([0, 1], [30, 20])
    test_scores = np.clip(0.5 + (test_labels - 0.5) * 0.4 + rng.normal(0, 0.3, 50), 0.01, 0.99)
    scores = np.column_stack([1 - test_scores, test_scores])
    write_run(study, study.grid_cells[0], np.ones(50, bool), np.ones(20, bool), classes=2,
              test_labels=test_labels, test_scores=scores)
    summary, _ = collect(study)
    return summary.iloc[0], test_labels, scores


@pytest.mark.parametrize("positive, index", [(None, 1), ("class1", 1), ("class0", 0)])
def test_recall_and_fnr_of_the_positive_class_match_sklearn(tmp_path, positive, index):
    row, labels, scores = binary_run(tmp_path, positive)
    predicted = scores.argmax(axis=1)
    recall = recall_score(labels, predicted, pos_label=index)
    assert row["positive_class"] == f"class{index}"
    assert row["test_recall"] == pytest.approx(recall) and row["test_fnr"] == pytest.approx(1 - recall)
    found = int(((predicted == index) & (labels == index)).sum())
    assert (row["test_recall_low"], row["test_recall_high"]) == pytest.approx(wilson_interval(found, int((labels == index).sum())))
    assert row["test_recall_low"] < recall < row["test_recall_high"]
    assert row["test_auc"] == pytest.approx(roc_auc_score(labels == index, scores[:, index]))  # the same AUC


def test_a_positive_class_that_is_not_a_class_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"positive_class\.d1: 'tumour' is not a class of d1; its classes are "
                                         r"\['class0', 'class1'\]"):
        binary_run(tmp_path, "tumour")
    config = study_config(tmp_path)
    config["positive_class"] = {"nope": "x"}
    with pytest.raises(ConfigError, match=r"positive_class\.nope: unknown dataset 'nope'"):
        build_study(config)


def test_more_than_two_classes_have_no_recall_columns(tmp_path):
    study = make_study(tmp_path)
    write_run(study, study.grid_cells[0], np.ones(30, bool), np.ones(30, bool), classes=3)
    summary, _ = collect(study)
    assert summary["test_recall"].isna().all() and summary["positive_class"].isna().all()


def test_regimes_table_gives_recall_and_fnr_per_freezing_depth():
    from fakecells import summary_frame
    from workflow.results.tables import regimes_table

    rows = [{"train": train, "seed": seed, "test_accuracy": 0.8, "test_recall": recall + seed / 100,
             "test_fnr": 1 - recall - seed / 100, "train_time_s": 10.0}
            for train, recall in (("keras:15", 0.7), ("keras:100", 0.9)) for seed in (0, 2)]
    table = regimes_table(summary_frame(rows)).set_index("regime")
    assert sorted(table.index) == ["last 100 Keras layers", "last 15 Keras layers"]
    assert table.loc["last 100 Keras layers", "test_recall"] == pytest.approx(0.91)
    assert table.loc["last 15 Keras layers", "test_fnr"] == pytest.approx(0.29)
    assert "test_recall" not in regimes_table(summary_frame([{"train": "head"}, {"train": "all"}]))
