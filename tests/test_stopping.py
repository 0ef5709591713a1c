"""Early stopping and the plateau schedule on a monitored quantity with a threshold, as Keras's
EarlyStopping(monitor, min_delta, patience) and ReduceLROnPlateau run them.

The expected sequences are worked by hand from Keras's documented algorithm (no Keras here):
- EarlyStopping: `wait` counts the epochs since the last improvement, an epoch improves when
  `current - min_delta > best` (max mode, accuracies) or `current + min_delta < best` (min mode, losses),
  and only an improving epoch becomes `best`; training stops once `wait >= patience`.
- ReduceLROnPlateau: the same test of improvement; the LR is cut once `wait >= patience` (Keras's
  patience), and `wait` restarts. tlsweep cuts after MORE than `plateau.patience` epochs, so Keras's
  patience P is P - 1 here.
Values are multiples of 1/16 and thresholds of 1/8, so that every comparison is exact in floating point.
"""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import make_cell
from workflow.core.cell import DEFAULT_TRAINING, TrainingSettings
from workflow.study.config import ConfigError, check_config
from workflow.train.cell import train_cell
from workflow.train.optim import EarlyStopping, Schedule

STAGE = {"name": "s", "train": "all", "epochs": 10}


def stopping_flags(stopping: EarlyStopping, monitor: str, values: list[float]) -> list[bool]:
    return [stopping.step({monitor: value}) for value in values]


def test_early_stopping_on_val_loss_with_a_threshold_as_keras():
    # Keras EarlyStopping(monitor="val_loss", min_delta=0.125, patience=2), epoch by epoch:
    # 2.0 improves (best 2.0) | 1.9375: 2.0625 < 2.0 no, wait 1 | 1.75: 1.875 < 2.0, best 1.75, wait 0
    # | 1.6875: 1.8125 < 1.75 no, wait 1 (a gain under min_delta: the best stays 1.75)
    # | 1.5625: 1.6875 < 1.75, best 1.5625, wait 0 | 1.5: wait 1 | 1.4375: 1.5625 < 1.5625 no, wait 2: stop
    losses = [2.0, 1.9375, 1.75, 1.6875, 1.5625, 1.5, 1.4375]
    stopping = EarlyStopping(2, "val_loss", 0.125)
    assert stopping_flags(stopping, "val_loss", losses) == [False] * 6 + [True]
    assert stopping.progress.best == 1.5625
    # without the threshold every lower loss improves: no stop
    assert not any(stopping_flags(EarlyStopping(2, "val_loss", 0.0), "val_loss", losses))


def test_early_stopping_on_val_accuracy_with_seed_004s_threshold():
    # Keras EarlyStopping(monitor="val_accuracy", min_delta=1e-5, patience=2): gains of 4e-6 are no progress
    accuracies = [0.5, 0.500004, 0.500008, 0.6]
    flags = stopping_flags(EarlyStopping(2, "val_accuracy", 1e-5), "val_accuracy", accuracies)
    assert flags == [False, False, True, False]
    assert not any(stopping_flags(EarlyStopping(2, "val_accuracy", 0.0), "val_accuracy", accuracies))


def test_the_monitor_decides_when_an_overfitting_run_stops():
    # accuracy still rising while the loss rises from epoch 3: Keras's default monitor (val_loss) stops it
    epochs = [{"val_accuracy": a, "val_loss": loss} for a, loss in
              [(0.5, 1.0), (0.625, 0.875), (0.6875, 0.9375), (0.75, 1.0), (0.8125, 1.125)]]
    on_loss, on_accuracy = EarlyStopping(2, "val_loss", 0.0), EarlyStopping(2, "val_accuracy", 0.0)
    assert [on_loss.step(m) for m in epochs] == [False, False, False, True, True]
    assert [on_accuracy.step(m) for m in epochs] == [False] * 5


def test_early_stopping_resumes_with_its_monitor_and_counter():
    losses = [2.0, 1.9375, 1.75, 1.6875, 1.5625, 1.5, 1.4375]
    first = EarlyStopping(2, "val_loss", 0.125)
    stopping_flags(first, "val_loss", losses[:4])
    again = EarlyStopping(2, "val_loss", 0.125)
    again.load_state_dict(first.state_dict())
    assert stopping_flags(again, "val_loss", losses[4:]) == [False, False, True]


def plateau_lrs(plateau: dict, metrics: list[dict]) -> list[float]:
    """The learning rate each epoch ran at, under the plateau schedule with `plateau` settings."""
    settings = TrainingSettings(plateau=plateau).stage(STAGE, "sgd", "all")
    schedule, seen = Schedule(settings, 1.0), []
    for epoch in metrics:
        seen.append(schedule.lr())
        schedule.step(epoch)
    return seen


def test_plateau_on_val_loss_with_a_threshold_as_keras_reduce_lr_on_plateau():
    # Keras ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_delta=0.125) = patience 1 here:
    # 2.0 best | 1.9375 wait 1 | 1.875 (not below 2.0 - 0.125) wait 2: cut to 0.5 | 1.5 best | 1.4375 wait 1
    # | 1.375 wait 2: cut to 0.25 | 1.3125 best. The LR set after an epoch is the next one's.
    losses = [2.0, 1.9375, 1.875, 1.5, 1.4375, 1.375, 1.3125]
    metrics = [{"val_loss": loss, "val_accuracy": 0.5} for loss in losses]
    plateau = {"patience": 1, "factor": 0.5, "monitor": "val_loss", "min_delta": 0.125}
    assert plateau_lrs(plateau, metrics) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    # on val_accuracy (constant here) the same settings cut every second epoch
    assert plateau_lrs({**plateau, "monitor": "val_accuracy"}, metrics) == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]


def test_plateau_resumes_with_its_best_on_the_monitor():
    losses = [2.0, 1.9375, 1.875, 1.5, 1.4375, 1.375, 1.3125]
    settings = TrainingSettings(plateau={"patience": 1, "factor": 0.5, "monitor": "val_loss", "min_delta": 0.125}
                                ).stage(STAGE, "sgd", "all")
    first = Schedule(settings, 1.0)
    for loss in losses[:4]:
        first.step({"val_loss": loss})
    again = Schedule(settings, 1.0)
    again.load_state_dict(first.state_dict())
    seen = []
    for loss in losses[4:]:
        again.step({"val_loss": loss})
        seen.append(again.lr())
    assert seen == [0.5, 0.25, 0.25]


def test_unset_monitor_and_threshold_stay_out_of_the_cell_and_mean_todays_rule():
    # the JSON of a cell that leaves them unset is the JSON cells had before these keys (no retraining)
    assert DEFAULT_TRAINING["early_stopping"] == {"patience": 10}
    assert DEFAULT_TRAINING["plateau"] == {"patience": 3, "factor": 0.1}
    assert "zoom_axes" not in DEFAULT_TRAINING["augment"]
    cell = make_cell()
    assert "monitor" not in cell.to_json() and "min_delta" not in cell.to_json()
    stage = cell.stages()[0]
    assert stage["early_stopping"] == {"monitor": "val_accuracy", "min_delta": 0.0, "patience": 5}
    assert stage["plateau"] == {"monitor": "val_accuracy", "min_delta": 0.0, "patience": 3, "factor": 0.1}
    # a stage's own early stopping: merged over the study's, its unset keys still today's
    staged = TrainingSettings(early_stopping={"patience": 10, "min_delta": 1e-5}).stage(
        {**STAGE, "early_stopping": {"monitor": "val_loss"}}, "adam", "all")
    assert staged["early_stopping"] == {"monitor": "val_loss", "min_delta": 1e-5, "patience": 10}


def test_the_study_file_takes_monitor_and_min_delta_and_refuses_others():
    from conftest import unit_study

    config = unit_study({"early_stopping": {"patience": 10, "min_delta": 1e-5, "monitor": "val_loss"},
                         "plateau": {"monitor": "val_loss", "min_delta": 0.0},
                         "stages": [{"name": "all", "train": "all", "epochs": 2,
                                     "early_stopping": {"monitor": "val_accuracy"}}],
                         "augment": {"zoom": 0.2, "zoom_axes": "independent"}})
    check_config(config)
    for bad in ({"early_stopping": {"monitor": "train_loss"}}, {"plateau": {"min_delta": -0.1}},
                {"augment": {"zoom_axes": "xy"}}):
        with pytest.raises(ConfigError):
            unit_study(bad)


def test_a_cell_stops_on_val_loss_and_keeps_the_best_accuracy_epoch(shard, tmp_path):
    # no later epoch can lower the validation loss by 100: each stage stops after its patience of 1
    messages = []
    cell = make_cell(training={"early_stopping": {"patience": 1, "monitor": "val_loss", "min_delta": 100.0}})
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=messages.append)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history.groupby("stage", sort=False).size().tolist() == [2, 2] and metrics["epochs_run"] == 4
    assert sum("val_loss has not improved by more than 100 in 1 epoch(s)" in m for m in messages) == 2
    best = history["val_accuracy"].idxmax()  # the weights evaluated: the best validation accuracy's epoch
    assert metrics["best_epoch"] == history.loc[best, "epoch"]
    assert metrics["best_val_accuracy"] == pytest.approx(history.loc[best, "val_accuracy"])
