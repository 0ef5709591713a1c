"""A study of sub-grids (seed 003's learning-rate, batch-size and freezing sweeps): which studies get the
`sweeps` table, what it holds (each sweep's cells with their intervals, recall and false-negative rate for
two classes), the macro F1's bootstrap interval, and the depth chart's accuracy and F1 panels."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score
from statsmodels.stats.proportion import proportion_confint

from conftest import REPO
from fakecells import make_study
from fakepredictions import binary_scores, write_run
from workflow.results.charts import CHARTS
from workflow.results.inference import bootstrap_counts, macro_f1_interval
from workflow.results.publish import aggregate_study
from workflow.study.config import load_config
from workflow.study.grid import build_study
from workflow.study.outputs import cell_records, study_charts, study_tables, swept_axes


@pytest.mark.parametrize("name, sweeps", [
    ("freezing-imagefolder", ["batch_size", "lr", "train"]),
    ("pcam-batch-lr", []),  # every combination: the batch_lr table and the heatmap show it
    ("batch-size-cifar", []), ("densenet-regimes", []),
    ("optimizers-cats-vs-dogs", []),  # one axis swept (the optimizer per model): the pivots show it
])
def test_sweeps_are_planned_for_a_study_of_sub_grids_only(name, sweeps):
    study = build_study(load_config(REPO / "studies" / f"{name}.yaml"))
    assert sorted(swept_axes(cell_records(study))) == sweeps
    assert ("sweeps" in study_tables(study)) == bool(sweeps)


SUB_GRIDS = {"batch_size": [64], "lr": [1e-4], "train": ["last:2", "last:4"], "include": [
    {"batch_size": 32, "lr": 0.1, "train": "head"}, {"batch_size": 32, "lr": 1e-4, "train": "head"},
    {"batch_size": 16, "lr": 1e-4, "train": "head"}, {"batch_size": 64, "lr": 1e-4, "train": "head"}]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Three sweeps of two-class cells: each cell finds a different number of the 40 positive test images."""
    study = make_study(tmp_path_factory.mktemp("sweeps"), **SUB_GRIDS)
    labels = np.repeat([0, 1], 40)
    found = {}
    for i, cell in enumerate(study.grid_cells):
        hits = 20 + 3 * i
        positive = np.r_[np.full(30, 0.2), np.full(10, 0.7), np.full(hits, 0.8), np.full(40 - hits, 0.3)]
        f1 = f1_score(labels, positive > 0.5, average="macro")  # as training reports it
        write_run(study, cell, labels == labels, labels == labels, test_labels=labels, val_labels=labels,
                  test_scores=binary_scores(positive), val_scores=binary_scores(positive), test_macro_f1=f1)
        found[cell.id] = hits
    return study, aggregate_study(study, log=lambda message: None), found


def test_each_sweep_lists_its_cells_in_order_with_recall_and_fnr_intervals(swept):
    study, tables, found = swept
    assert "sweeps" in study_tables(study)
    table = tables["sweeps"]
    by_sweep = {axis: list(zip(rows["fixed"], rows["value"])) for axis, rows in table.groupby("sweep", sort=False)}
    assert by_sweep == {
        "batch_size": [("lr=1e-4 train=head", v) for v in ("16", "32", "64")],
        "lr": [("batch_size=32 train=head", v) for v in ("1e-4", "1e-1")],
        "train": [("batch_size=64 lr=1e-4", v) for v in ("head", "last:2", "last:4")]}
    for _, row in table.iterrows():
        low, high = proportion_confint(found[row["cell"]], 40, alpha=0.05, method="wilson")
        assert row["test_recall"] == found[row["cell"]] / 40 and row["test_fnr"] == 1 - found[row["cell"]] / 40
        assert (row["test_recall_low"], row["test_recall_high"]) == pytest.approx((low, high))
        assert (row["test_fnr_low"], row["test_fnr_high"]) == pytest.approx((1 - high, 1 - low))
        assert row["test_macro_f1_low"] <= row["test_macro_f1"] <= row["test_macro_f1_high"]


def test_macro_f1_interval_is_the_percentile_bootstrap_of_sklearns_f1():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 120)
    predicted = np.where(rng.random(120) < 0.7, labels, rng.integers(0, 3, 120))
    draws = [f1_score(np.repeat(labels, row), np.repeat(predicted, row), average="macro", labels=[0, 1, 2],
                      zero_division=0) for counts in bootstrap_counts(120) for row in counts]
    assert macro_f1_interval(labels, predicted, 3) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))


def test_the_depth_chart_draws_accuracy_and_f1_with_their_intervals(swept):
    study, tables, _ = swept
    assert "trainable_layers" in study_charts(study)
    spec = json.dumps(CHARTS["trainable_layers"](tables["summary"], None).to_dict())
    for metric in ("test_accuracy", "test_macro_f1"):
        assert f'"y2": {{"field": "{metric}_high"' in spec and f'"field": "{metric}_low"' in spec
    assert "Test accuracy and macro F1 by the number of trainable layers" in spec
