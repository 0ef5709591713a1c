"""Replicate statistics worked out by hand: mean, sd, t-interval, Welch's test, the best (chosen on
validation) and its margins."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import fakecells
from fakecells import summary_frame
from workflow.results.aggregate import collect
from workflow.results.compare import welch_p
from workflow.results.stats import best_table, configurations, mean_ci, primary_metric


@pytest.fixture
def mixed_study(tmp_path):
    return fakecells.mixed_study(tmp_path)


T_975 = {1: 12.706204736174694, 2: 4.302652729749462}  # t quantiles, from a printed table


def test_mean_sd_and_t_interval_by_hand():
    mean, sd, low, high = mean_ci(np.array([0.80, 0.82, 0.84]))
    half = T_975[2] * 0.02 / math.sqrt(3)
    assert (mean, sd, low, high) == pytest.approx((0.82, 0.02, 0.82 - half, 0.82 + half))
    assert mean_ci(np.array([0.7]))[0] == 0.7 and all(math.isnan(x) for x in mean_ci(np.array([0.7]))[1:])
    assert all(math.isnan(x) for x in mean_ci(np.array([])))


def test_welch_p_matches_the_formula():
    a, b = np.array([0.80, 0.82, 0.84]), np.array([0.70, 0.74])
    va, vb = 0.02**2 / 3, 0.0008 / 2  # s^2/n
    t = 0.10 / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)  # Welch-Satterthwaite
    assert welch_p(a, b) == pytest.approx(2 * stats.t.sf(t, df))
    assert welch_p(a, b) == pytest.approx(0.066496, abs=1e-6)
    assert math.isnan(welch_p(a, np.array([0.7])))
    assert welch_p(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 1.0
    assert welch_p(np.array([0.5, 0.5]), np.array([0.6, 0.6])) == 0.0


def test_configurations_of_seeds_leave_out_runs_that_are_not_ok(mixed_study):
    configs = configurations(collect(mixed_study)[0]).set_index(["dataset", "batch_size"])
    d1_16, d1_64 = configs.loc[("d1", 16)], configs.loc[("d1", 64)]
    assert (d1_16["n_runs"], d1_16["n_ok"], d1_16["mean"], d1_16["sd"]) == (3, 3, pytest.approx(0.82),
                                                                            pytest.approx(0.02))
    assert d1_16["ci95_high"] - d1_16["mean"] == pytest.approx(T_975[2] * 0.02 / math.sqrt(3))
    # the diverged seed (test accuracy 0.10) is left out: mean of 0.70 and 0.74
    assert (d1_64["n_runs"], d1_64["n_ok"], d1_64["mean"]) == (3, 2, pytest.approx(0.72))
    assert d1_64["ci95_low"] == pytest.approx(0.72 - T_975[1] * math.sqrt(0.0008) / math.sqrt(2))
    assert d1_16["rank"] == 1 and d1_16["indistinguishable_from_best"] and d1_16["config"] == "batch_size=16"
    assert d1_64["rank"] == 2 and d1_64["p_vs_best"] == pytest.approx(0.066496, abs=1e-6)
    assert d1_64["indistinguishable_from_best"]  # 10 points apart, yet two and three seeds cannot tell
    d2_16 = configs.loc[("d2", 16)]  # OOM, failed, never run
    assert (d2_16["n_runs"], d2_16["n_ok"]) == (3, 0) and math.isnan(d2_16["mean"]) and pd.isna(d2_16["rank"])
    assert configs.loc[("d2", 64), "sd"] == pytest.approx(0.1) and configs.loc[("d2", 64), "rank"] == 1


def test_best_per_dataset_and_model_with_margin_over_runner_up(mixed_study):
    best = best_table(configurations(collect(mixed_study)[0])).set_index("dataset")
    assert best.loc["d1", "config"] == "batch_size=16" and best.loc["d1", "batch_size"] == 16
    assert best.loc["d1", "mean"] == pytest.approx(0.82) and best.loc["d1", "runner_up"] == "batch_size=64"
    # every cell has validation accuracy 0.6 and loss 1.0 at its best epoch and trained 10 s: a tie on
    # validation, broken by grid order; the test margin only confirms
    assert best.loc["d1", "val_margin"] == 0 and best.loc["d1", "test_margin"] == pytest.approx(0.10)
    assert best.loc["d1", "runner_up_p"] == pytest.approx(0.066496, abs=1e-6)
    assert best.loc["d1", "n_indistinguishable"] == 1
    # d2: the only configuration with finished runs has no runner-up
    assert best.loc["d2", "batch_size"] == 64 and pd.isna(best.loc["d2", "runner_up"])
    assert math.isnan(best.loc["d2", "val_margin"]) and math.isnan(best.loc["d2", "test_margin"])


def test_clear_differences_are_not_ties_and_single_seeds_are_not_tested():
    seeds = summary_frame(
        [{"optimizer": "adam", "seed": s, "test_accuracy": 0.90 + s / 1000, "best_val_accuracy": 0.9} for s in range(3)]
        + [{"optimizer": "sgd", "seed": s, "test_accuracy": 0.80 + s / 1000, "best_val_accuracy": 0.8} for s in range(3)]
        + [{"optimizer": "rmsprop", "seed": s, "test_accuracy": 0.899 + s / 1000, "best_val_accuracy": 0.89}
           for s in range(3)])
    configs = configurations(seeds).set_index("optimizer")
    assert configs.loc["sgd", "p_vs_best"] < 1e-6 and not configs.loc["sgd", "indistinguishable_from_best"]
    assert configs.loc["rmsprop", "indistinguishable_from_best"]
    assert best_table(configurations(seeds))["n_indistinguishable"].tolist() == [1]
    single = summary_frame([{"optimizer": "adam", "test_accuracy": 0.9, "best_val_accuracy": 0.9},
                            {"optimizer": "sgd", "test_accuracy": 0.8, "best_val_accuracy": 0.8}])
    best = best_table(configurations(single)).iloc[0]
    assert best["test_margin"] == pytest.approx(0.1) and math.isnan(best["runner_up_p"])
    assert best["runner_up_verdict"] == "untested"  # one seed and no predictions.npz: nothing to test with
    assert pd.isna(best["n_indistinguishable"])


def test_auc_is_the_primary_metric_when_runs_report_it():
    rows = [{"batch_size": b, "test_accuracy": 0.9, "test_auc": auc, "val_auc": auc, "best_val_accuracy": 0.9}
            for b, auc in [(16, 0.95), (64, 0.97)]]
    assert primary_metric(summary_frame(rows)) == "test_auc"
    best = best_table(configurations(summary_frame(rows)))
    assert best["batch_size"].tolist() == [64] and best["selection"].tolist() == ["val_auc"]
    assert primary_metric(summary_frame([{"test_accuracy": 0.9}])) == "test_accuracy"


def test_every_run_failed_gives_an_empty_best_table():
    summary = summary_frame([{"status": "failed"}, {"status": "oom", "batch_size": 64}])
    configs = configurations(summary)
    assert configs["n_ok"].tolist() == [0, 0] and configs["mean"].isna().all()
    best = best_table(configs)
    assert best.empty and {"dataset", "model", "config", "val_margin", "test_margin"} <= set(best.columns)
