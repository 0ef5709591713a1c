"""Shared test helpers: studies whose cells' metrics.json and history.csv are written by hand."""

from __future__ import annotations

import json

import pandas as pd

from workflow.results.aggregate import METRICS
from workflow.study.grid import AXES, Study, build_study

HISTORY_COLUMNS = ["epoch", "stage", "train", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "seconds", "images_per_s"]  # workflow.train.loop.HISTORY_COLUMNS, without importing torch


def study_config(tmp_path, name: str = "hand", **grid) -> dict:
    """A complete study config (the schema's defaults written out) whose results go under tmp_path."""
    full_grid = {"dataset": ["d1"], "model": ["resnet18"], "resolution": [16], "batch_size": [16], "lr": [0.01],
                 "optimizer": ["sgd"], "train": ["all"], "seed": [0], "weights": ["imagenet"], **grid}
    return {
        "study": name,
        "results_dir": str(tmp_path / "results"),
        "datasets": {d: {"source": "digits", "split": {"train": 0.6, "val": 0.2, "test": 0.2}}
                     for d in full_grid["dataset"]},
        "grid": full_grid,
    }


def make_study(tmp_path, **grid) -> Study:
    return build_study(study_config(tmp_path, **grid))


def find(study: Study, **values):
    """The one grid cell with these axis values."""
    (cell,) = [c for c in study.grid_cells if all(getattr(c, k) == v for k, v in values.items())]
    return cell


def write_cell(study: Study, cell, status: str = "ok", test_accuracy: float | None = 0.5, epochs: int = 4,
               best_epoch: int | None = None, train_time_s: float = 10.0, **extra) -> dict:
    """Write a cell's history.csv (`epochs` rows; validation accuracy peaks at `best_epoch`) and metrics.json."""
    best_epoch = epochs if best_epoch is None else best_epoch
    folder = study.cell_dir(cell.id)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": e, "stage": "head" if e <= 2 else "finetune", "train": "head" if e <= 2 else cell.train,
             "lr": cell.lr if e <= 2 else cell.lr / 100, "train_loss": 2.0 / e, "train_accuracy": 0.5 + e / 100,
             "val_loss": 1.0 + abs(e - best_epoch) / 10, "val_accuracy": 0.6 - abs(e - best_epoch) / 100,
             "seconds": train_time_s / epochs, "images_per_s": 100.0} for e in range(1, epochs + 1)]
    pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(folder / "history.csv", index=False)
    metrics = {
        "cell": cell.id, "status": status, "diverged_epoch": None, "test_accuracy": test_accuracy,
        "test_top5_accuracy": None, "test_loss": 0.7, "test_macro_f1": 0.5,
        "best_val_accuracy": 0.6 if epochs else None, "epochs_run": epochs, "best_epoch": best_epoch if epochs else None,
        "wall_time_s": train_time_s + 5, "train_time_s": train_time_s, "images_per_s": 100.0, "device": "cpu",
        "config": json.loads(cell.to_json()), **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def mixed_study(tmp_path) -> Study:
    """Two datasets x two batch sizes x three seeds: ok, diverged, OOM, failed and never-run cells."""
    study = make_study(tmp_path, dataset=["d1", "d2"], batch_size=[16, 64], seed=[0, 1, 2])
    for seed, accuracy in enumerate([0.80, 0.82, 0.84]):
        write_cell(study, find(study, dataset="d1", batch_size=16, seed=seed), test_accuracy=accuracy,
                   best_epoch=3 if seed == 0 else None, peak_memory_mb=512.0 if seed == 0 else None)
    write_cell(study, find(study, dataset="d1", batch_size=64, seed=0), test_accuracy=0.70)
    write_cell(study, find(study, dataset="d1", batch_size=64, seed=1), test_accuracy=0.74)
    write_cell(study, find(study, dataset="d1", batch_size=64, seed=2), status="diverged", test_accuracy=0.10,
               epochs=2, diverged_epoch=3)
    oom = write_cell(study, find(study, dataset="d2", batch_size=16, seed=0), status="oom", test_accuracy=None,
                     epochs=0, best_epoch=None)
    (study.cell_dir(oom["cell"]) / "history.csv").unlink()  # an OOM before the first epoch may leave none
    failed = find(study, dataset="d2", batch_size=16, seed=1)
    log = study.out / "logs/train" / f"{failed.id}.log"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1 (head): ...\nRuntimeError: boom\n\n")
    for seed, accuracy in enumerate([0.5, 0.6, 0.7]):
        write_cell(study, find(study, dataset="d2", batch_size=64, seed=seed), test_accuracy=accuracy)
    return study


def summary_frame(rows: list[dict]) -> pd.DataFrame:
    """A summary table shaped as workflow.results.aggregate.collect makes it, from rows that give only what differs."""
    defaults = {"dataset": "d1", "model": "resnet18", "resolution": 16, "optimizer": "sgd", "batch_size": 16,
                "lr": 0.01, "train": "all", "weights": "imagenet", "seed": 0, "status": "ok"}
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    frame["cell"] = [f"cell{i}" for i in range(len(frame))]
    return frame.reindex(columns=["cell", *AXES, *METRICS]).astype(
        {column: dtype for column, dtype in METRICS.items() if dtype != "object"})
