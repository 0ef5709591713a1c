"""One cell's training on real digits: stages, history, best checkpoint, diverged runs."""

import json

import pandas as pd
import pytest
import torch

from workflow.prepare import prepare_dataset
from workflow.study import DEFAULT_TRAINING, merge
from workflow.training import HISTORY_COLUMNS, train_cell


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    spec = {"source": "digits", "classes": [0, 1, 2], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("digits-012", spec, 16, folder / "r16.h5", folder / "r16.json")
    return folder / "r16.h5"


def make_cell(**overrides):
    training = merge(DEFAULT_TRAINING, {
        "stages": [{"name": "head", "freeze": "head", "epochs": 2, "lr_factor": 1.0},
                   {"name": "finetune", "freeze": "cell", "epochs": 3, "lr_factor": 0.1}],
        "early_stopping": {"patience": 5},
    })
    cell = {"id": "digits-012/resnet18/r16/test", "dataset": "digits-012", "model": "resnet18", "resolution": 16,
            "batch_size": 32, "lr": 0.01, "optimizer": "adam", "freeze": "all", "seed": 0, "weights": "none",
            "training": training, "upstream": None}
    return {**cell, **overrides}


def test_two_stage_training_writes_history_metrics_and_best_checkpoint(shard, tmp_path):
    cell = make_cell()
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=lambda _: None)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert history["stage"].tolist() == ["head", "head", "finetune", "finetune", "finetune"]
    assert history["freeze"].tolist() == ["head", "head", "all", "all", "all"]
    assert history["lr"].iloc[0] == pytest.approx(0.01) and history["lr"].iloc[2] == pytest.approx(0.001)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["status"] == "ok" and on_disk["epochs_run"] == 5
    best = history.loc[history["val_accuracy"].idxmax()]
    assert on_disk["best_epoch"] == best["epoch"]
    assert on_disk["best_val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == best["epoch"]
    assert on_disk["config"] == cell
    assert 0 <= on_disk["test_accuracy"] <= 1 and sum(map(sum, on_disk["confusion_matrix"])) > 0


def test_early_stopping_ends_a_stage(shard, tmp_path):
    cell = make_cell(lr=1e-9)  # nothing improves
    cell["training"]["early_stopping"] = {"patience": 1}
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=lambda _: None)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history.groupby("stage", sort=False).size().tolist() == [2, 2]
    assert metrics["epochs_run"] == 4


def test_diverged_run_is_recorded_not_raised(shard, tmp_path):
    cell = make_cell(lr=1e12, optimizer="sgd")
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=lambda _: None)
    assert metrics["status"] == "diverged"
    assert metrics["diverged_epoch"] >= 1
    assert (tmp_path / "best.pt").exists() and (tmp_path / "history.csv").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
