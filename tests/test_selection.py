"""Choosing on validation, confirming on test: the summary's intervals from predictions.npz, the paired
tests against the winner, the overall and per-model recommendations and the `selection` setting."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from fakecells import find, make_study, summary_frame, write_cell
from fakepredictions import binary_scores, labels, mask, scores, write_run
from workflow.results.aggregate import collect, collect_cells
from workflow.train.predictions import PREDICTIONS, read_predictions, write_predictions
from workflow.results.stats import best_table, configurations, resolve_selection


def ranked(study, selection=None):
    summary, _, outcomes = collect_cells(study)
    configs = configurations(summary, selection, outcomes)
    return summary, configs.set_index("config"), best_table(configs)


@pytest.fixture
def disagreeing(tmp_path):
    """sgd is best on validation (0.90 vs 0.85) but adam on test (0.90 vs 0.70), on 300 images each."""
    study = make_study(tmp_path, optimizer=["sgd", "adam"])
    write_run(study, find(study, optimizer="sgd"), mask(300, 210), mask(300, 270), classes=3)
    write_run(study, find(study, optimizer="adam"), mask(300, 270), mask(300, 255), classes=3)
    return study


def test_predictions_round_trip_and_bad_files_are_refused(tmp_path):
    y = labels(10, 3)
    write_predictions(tmp_path / PREDICTIONS, scores(y, mask(10, 7), 3), y, scores(y, mask(10, 9), 3), y, ["a", "b", "c"])
    read = read_predictions(tmp_path)
    assert read.test_scores.dtype == np.float32 and read.test_labels.dtype == np.int64
    assert read.class_names.tolist() == ["a", "b", "c"] and read.test_correct().sum() == 9
    assert read_predictions(tmp_path / "nowhere") is None
    with pytest.raises(ValueError, match="test_scores has shape"):
        write_predictions(tmp_path / "bad.npz", scores(y, mask(10, 7), 3), y, np.zeros((10, 2)), y, ["a", "b", "c"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / PREDICTIONS).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="BadZipFile|pickle|Failed"):
        read_predictions(tmp_path / "broken")
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary file left


def test_summary_has_wilson_and_delong_intervals_and_split_sizes(tmp_path):
    study = make_study(tmp_path, batch_size=[16, 64], optimizer=["sgd", "adam"])
    rng = np.random.default_rng(0)
    y = labels(40, 2)
    positive = np.clip(y * 0.35 + rng.random(40) * 0.65, 0, 1)
    write_run(study, find(study, batch_size=16, optimizer="sgd"), None, mask(30, 24), classes=2, test_labels=y,
              test_scores=binary_scores(positive))
    write_run(study, find(study, batch_size=64, optimizer="sgd"), mask(40, 33), mask(30, 27), classes=2)
    write_cell(study, find(study, batch_size=16, optimizer="adam"), test_accuracy=0.75,
               per_class={"a": {"support": 30}, "b": {"support": 10}})  # no predictions, class counts only
    broken = study.cell_dir(find(study, batch_size=64, optimizer="adam").id)
    write_cell(study, find(study, batch_size=64, optimizer="adam"))
    (broken / PREDICTIONS).write_text("garbage")
    summary = collect(study)[0].set_index(["batch_size", "optimizer"])
    auc_run, accuracy_run = summary.loc[(16, "sgd")], summary.loc[(64, "sgd")]
    right = int(round(auc_run["test_accuracy"] * 40))
    assert (auc_run["test_accuracy_low"], auc_run["test_accuracy_high"]) == pytest.approx(
        proportion_confint(right, 40, method="wilson"))
    assert (accuracy_run["test_accuracy_low"], accuracy_run["test_accuracy_high"]) == pytest.approx(
        proportion_confint(33, 40, method="wilson"))
    assert auc_run["test_auc_low"] < auc_run["test_auc"] < auc_run["test_auc_high"]
    assert (auc_run["n_test"], auc_run["n_val"], auc_run["test_smallest_class"], auc_run["test_majority_rate"]) == (
        40, 30, 20, 0.5)
    val = read_predictions(study.cell_dir(find(study, batch_size=16, optimizer="sgd").id))
    assert auc_run["val_auc"] == pytest.approx(roc_auc_score(val.val_labels, val.val_scores[:, 1]))
    assert auc_run["predictions"] == "yes"
    counted = summary.loc[(16, "adam")]  # metrics.json alone: its per-class supports
    assert counted["predictions"] == "missing" and counted["n_test"] == 40 and counted["test_majority_rate"] == 0.75
    assert (counted["test_accuracy_low"], counted["test_accuracy_high"]) == pytest.approx(
        proportion_confint(30, 40, method="wilson"))
    assert math.isnan(counted["val_auc"]) and pd.isna(counted["n_val"])
    assert summary.loc[(64, "adam"), "predictions"].startswith("unreadable: ")
    assert set(summary["status"]) == {"ok"}  # no predictions is no failure


def test_selection_uses_validation_even_when_test_disagrees(disagreeing):
    summary, configs, best = ranked(disagreeing)
    (row,) = best.to_dict("records")
    assert row["config"] == "optimizer=sgd" and row["selection"] == "val_accuracy"
    assert row["val_value"] == pytest.approx(0.90) and row["val_margin"] == pytest.approx(0.05)
    assert row["mean"] == pytest.approx(0.70) and row["test_margin"] == pytest.approx(-0.20)  # confirms poorly
    assert (row["test_low"], row["test_high"]) == pytest.approx(proportion_confint(210, 300, method="wilson"))
    expected = mcnemar([[210, 0], [60, 30]], exact=True).pvalue  # adam right on 60 images sgd got wrong
    assert configs.loc["optimizer=adam", "tests"] == "McNemar exact"
    assert configs.loc["optimizer=adam", "p_vs_best"] == pytest.approx(expected)
    assert configs.loc["optimizer=adam", "verdict"] == "better on test" and row["runner_up_verdict"] == "better on test"
    assert summary.set_index("optimizer").loc["sgd", "status"] == "ok"


def test_selection_setting_val_loss_and_auto(tmp_path):
    rows = [{"optimizer": o, "best_val_accuracy": acc, "best_val_loss": loss, "test_accuracy": 0.8}
            for o, acc, loss in [("sgd", 0.9, 0.50), ("adam", 0.8, 0.30), ("rmsprop", 0.85, 0.40)]]
    summary = summary_frame(rows)
    assert best_table(configurations(summary))["config"].tolist() == ["optimizer=sgd"]
    best = best_table(configurations(summary, "val_loss"))
    assert best["config"].tolist() == ["optimizer=adam"] and best["val_margin"].tolist() == [pytest.approx(0.10)]
    binary = summary_frame([{"optimizer": o, "test_auc": 0.9, "val_auc": v, "best_val_accuracy": a}
                            for o, v, a in [("sgd", 0.80, 0.9), ("adam", 0.95, 0.8)]])
    assert resolve_selection(binary).name == "val_auc" and resolve_selection(summary).name == "val_accuracy"
    assert best_table(configurations(binary))["config"].tolist() == ["optimizer=adam"]
    old = binary.assign(val_auc=[0.8, math.nan])  # one ok cell without predictions.npz
    fallback = resolve_selection(old)
    assert fallback.name == "val_accuracy" and "1 of 2 ok cells" in fallback.note
    assert best_table(configurations(old))["config"].tolist() == ["optimizer=sgd"]
    with pytest.raises(ValueError, match="unknown 'val_f1'"):
        resolve_selection(summary, "val_f1")


def test_ties_on_validation_go_to_lower_validation_loss_then_shorter_training():
    rows = [{"optimizer": o, "best_val_accuracy": 0.9, "best_val_loss": loss, "train_time_s": t, "test_accuracy": 0.8}
            for o, loss, t in [("adam", 0.5, 10.0), ("rmsprop", 0.4, 30.0), ("sgd", 0.4, 20.0)]]
    configs = configurations(summary_frame(rows)).set_index("optimizer")
    assert configs["rank"].to_dict() == {"sgd": 1, "rmsprop": 2, "adam": 3}


def test_overall_recommendation_across_models_and_the_best_of_each(tmp_path):
    study = make_study(tmp_path, model=["resnet18", "mobilenet_v2"], optimizer=["sgd", "adam"])
    for model, optimizer, test, val in [("resnet18", "sgd", 250, 280), ("resnet18", "adam", 200, 260),
                                        ("mobilenet_v2", "sgd", 252, 270), ("mobilenet_v2", "adam", 150, 275)]:
        write_run(study, find(study, model=model, optimizer=optimizer), mask(300, test), mask(300, val))
    _, configs, best = ranked(study)
    assert best[["scope", "model", "config"]].values.tolist() == [
        ["overall", "resnet18", "resnet18: optimizer=sgd"],
        ["per model", "mobilenet_v2", "optimizer=adam"],
        ["per model", "resnet18", "optimizer=sgd"]]
    overall = best.iloc[0]
    assert overall["runner_up"] == "mobilenet_v2: optimizer=adam"  # second on validation (275 of 300)
    # on test, mobilenet_v2/sgd (252 vs 250) cannot be told apart; the other two are worse
    assert overall["indistinguishable"] == "mobilenet_v2: optimizer=sgd" and overall["n_indistinguishable"] == 1
    assert configs.loc["optimizer=sgd"].set_index("model").loc["mobilenet_v2", "overall_verdict"] == "indistinguishable"
    mobilenet = best.iloc[1]
    assert mobilenet["runner_up_verdict"] == "better on test" and mobilenet["n_indistinguishable"] == 0


def test_seeds_combine_the_paired_bootstrap_with_welchs_test(tmp_path):
    study = make_study(tmp_path, optimizer=["sgd", "adam"], seed=[0, 1, 2])
    for seed in range(3):
        write_run(study, find(study, optimizer="sgd", seed=seed), mask(200, 180 + seed), mask(200, 190))
        write_run(study, find(study, optimizer="adam", seed=seed), mask(200, 176 + 2 * seed), mask(200, 180))
    _, configs, best = ranked(study)
    adam = configs.loc["optimizer=adam"]
    assert adam["tests"] == "paired bootstrap + Welch"
    assert adam["p_vs_best"] == max(adam["p_paired"], adam["p_welch"]) and adam["verdict"] == "indistinguishable"
    sgd = configs.loc["optimizer=sgd"]
    half_seeds = sgd["ci95_high"] - sgd["mean"]
    runs = [proportion_confint(180 + s, 200, method="wilson") for s in range(3)]
    half_test = np.mean([(high - low) / 2 for low, high in runs])
    assert sgd["test_high"] - sgd["mean"] == pytest.approx(math.hypot(half_seeds, half_test))
    assert sgd["interval"] == "t over 3 seeds + Wilson, 95 %"
    assert best["indistinguishable"].tolist() == ["optimizer=adam"]
