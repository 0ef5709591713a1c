"""One cell's training on real digits: stages, schedules, optimizers, history, checkpoints,
resuming a killed job, and the diverged and out-of-memory paths."""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from workflow.__main__ import main
from workflow.models import build_classifier
from workflow.prepare import prepare_dataset
from workflow.study import DEFAULT_TRAINING, merge
from workflow.training import (
    HISTORY_COLUMNS, LAST, OOM_HOOK, TIMING_COLUMNS, Objective, Schedule, make_optimizer, parameter_groups,
    train_cell,
)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    spec = {"source": "digits", "classes": [0, 1, 2], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("digits-012", spec, 16, folder / "r16.h5", folder / "r16.json")
    return folder / "r16.h5"


def quiet(_):
    pass


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
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=quiet)
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
    assert on_disk["test_top5_accuracy"] is None and on_disk["test_auc"] is None  # 3 classes
    head, finetune = on_disk["stages"]
    assert (head["name"], head["freeze"], head["epochs_run"], head["lr"]) == ("head", "head", 2, 0.01)
    assert finetune["optimizer"] == "adam" and finetune["lr"] == pytest.approx(0.001)
    assert head["trainable_parameters"] == 512 * 3 + 3 < finetune["trainable_parameters"]
    assert head["wall_time_s"] > 0 and finetune["wall_time_s"] > 0
    assert 0 < on_disk["time_to_best_s"] <= head["wall_time_s"] + finetune["wall_time_s"] + 0.01  # each rounded
    assert on_disk["peak_memory_mb"] is None and on_disk["device"] == "cpu"
    assert set(on_disk["versions"]) >= {"python", "torch", "torchvision", "numpy"}
    assert on_disk["run"]["head"] == "gap" and on_disk["run"]["resumed_after_epochs"] == []
    assert not (tmp_path / LAST).exists()  # the resumable checkpoint goes once the cell is complete


def test_early_stopping_ends_a_stage(shard, tmp_path):
    cell = make_cell(lr=1e-9)  # nothing improves
    cell["training"]["early_stopping"] = {"patience": 1}
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=quiet)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history.groupby("stage", sort=False).size().tolist() == [2, 2]
    assert metrics["epochs_run"] == 4


def test_diverged_run_is_recorded_not_raised(shard, tmp_path):
    cell = make_cell(lr=1e12, optimizer="sgd")
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=quiet)
    assert metrics["status"] == "diverged"
    assert metrics["diverged_epoch"] >= 1
    assert (tmp_path / "best.pt").exists() and (tmp_path / "history.csv").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_two_classes_report_roc_auc_and_false_negative_rate(tmp_path):
    spec = {"source": "digits", "classes": [3, 8], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("digits-38", spec, 16, tmp_path / "r16.h5", tmp_path / "r16.json")
    cell = make_cell(training=merge(DEFAULT_TRAINING, {"stages": [{"name": "all", "freeze": "all", "epochs": 1}]}))
    metrics = train_cell(cell, tmp_path / "r16.h5", tmp_path / "cell", log=quiet)
    assert 0 <= metrics["test_auc"] <= 1 and 0 <= metrics["test_false_negative_rate"] <= 1
    assert metrics["test_false_negative_rate"] == pytest.approx(1 - metrics["per_class"]["8"]["recall"])


def test_out_of_memory_is_recorded_with_the_batch_size_and_the_job_succeeds(shard, tmp_path, monkeypatch):
    monkeypatch.setenv(OOM_HOOK, "13")  # 11 steps of 32 per epoch: the second step of epoch 2
    cell = make_cell()
    main(["train", "--cell", json.dumps(cell), "--shard", str(shard), "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "oom"
    assert metrics["oom"] == {"phase": "train", "epoch": 2, "batch_size": 32}
    assert metrics["epochs_run"] == 1 and metrics["best_epoch"] == 1 and metrics["test_accuracy"] is not None
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1 and (tmp_path / "best.pt").exists()


def test_last_checkpoint_of_another_config_is_not_resumed(shard, tmp_path):
    torch.save({"fingerprint": {"cell": "another"}}, tmp_path / LAST)
    messages = []
    cell = make_cell(training=merge(DEFAULT_TRAINING, {"stages": [{"name": "all", "freeze": "all", "epochs": 1}]}))
    metrics = train_cell(cell, shard, tmp_path, log=messages.append)
    assert any("not resuming" in m and "belongs to another cell config" in m for m in messages)
    assert metrics["epochs_run"] == 1 and metrics["run"]["resumed_after_epochs"] == []


def start_training(cell, shard, out, log_name):
    """`python -m workflow train` for one cell, as the train rule runs it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = open(out.parent / log_name, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "workflow", "train", "--cell", json.dumps(cell), "--shard", str(shard),
         "--out", str(out), "--threads", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )


def kill_after_epoch(process, out, epoch, timeout=300):
    """SIGKILL `process` as soon as its history (written after last.pt) reaches `epoch` epochs."""
    history, deadline = out / "history.csv", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if history.exists() and len(history.read_text().splitlines()) - 1 >= epoch:
            process.kill()
            process.wait()
            return
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    raise AssertionError(f"no epoch {epoch} within {timeout} s")


def test_killed_job_resumes_to_the_same_history_as_an_uninterrupted_run(shard, tmp_path):
    training = merge(DEFAULT_TRAINING, {
        "stages": [{"name": "head", "freeze": "head", "epochs": 2, "optimizer": "sgd", "nesterov": True},
                   {"name": "finetune", "freeze": "cell", "epochs": 3, "lr_factor": 0.1, "warmup_epochs": 1,
                    "plateau": {"patience": 0}}],
        "augment": {"hflip": True}, "mixup": 0.2, "label_smoothing": 0.1, "weight_decay": 1e-4, "deterministic": True,
    })
    cell = make_cell(training=training)
    reference = start_training(cell, shard, tmp_path / "reference", "reference.log")
    killed = tmp_path / "killed"
    first = start_training(cell, shard, killed, "run1.log")
    kill_after_epoch(first, killed, 2)  # the end of the first stage
    second = start_training(cell, shard, killed, "run2.log")
    kill_after_epoch(second, killed, 4)  # inside the second stage
    assert (killed / LAST).exists() and not (killed / "metrics.json").exists()
    third = start_training(cell, shard, killed, "run3.log")
    assert third.wait(timeout=300) == 0 and reference.wait(timeout=300) == 0, (tmp_path / "run3.log").read_text()

    expected = pd.read_csv(tmp_path / "reference" / "history.csv").drop(columns=list(TIMING_COLUMNS))
    resumed = pd.read_csv(killed / "history.csv").drop(columns=list(TIMING_COLUMNS))
    assert len(expected) == 5 and expected["lr"].nunique() >= 3 and expected["val_loss"].notna().all()
    pd.testing.assert_frame_equal(resumed, expected, check_exact=True)
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (killed, tmp_path / "reference"))
    for key in ("status", "test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "confusion_matrix"):
        assert ours[key] == theirs[key], key
    assert len(ours["run"]["resumed_after_epochs"]) == 2 and ours["run"]["resumed_after_epochs"][0] >= 2
    assert "resuming from" in (tmp_path / "run3.log").read_text()


def test_schedules_warm_up_then_plateau_cosine_or_step():
    settings = merge(DEFAULT_TRAINING, {"epochs": 6, "warmup_epochs": 2})

    def lrs(schedule_settings, accuracies):
        schedule, seen = Schedule(schedule_settings, 1.0), []
        for accuracy in accuracies:
            seen.append(schedule.lr())
            schedule.step(accuracy)
        return seen

    cosine = lrs({**settings, "schedule": "cosine", "cosine": {"min_lr_factor": 0.1}}, [0.5] * 6)
    assert cosine[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]) and cosine[-1] == pytest.approx(0.1)
    assert cosine[3] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 3)) / 2)
    step = lrs({**settings, "warmup_epochs": 0, "schedule": "step", "step": {"every": 2, "factor": 0.5}}, [0] * 6)
    assert step == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    plateau = {**settings, "warmup_epochs": 0, "plateau": {"patience": 1, "factor": 0.1}}
    assert lrs(plateau, [0.5, 0.4, 0.4, 0.6, 0.6, 0.6]) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1])
    schedule = Schedule(plateau, 1.0)
    for accuracy in [0.5, 0.4, 0.4]:
        schedule.step(accuracy)
    again = Schedule(plateau, 1.0)
    again.load_state_dict(schedule.state_dict())
    assert again.lr() == pytest.approx(0.1)


def test_optimizers_and_no_weight_decay_on_biases_and_norms():
    model, _ = build_classifier("resnet18", 3, "none")
    decayed, free = parameter_groups(model, 1e-4, decay_norm_and_bias=False)
    assert decayed["weight_decay"] == 1e-4 and free["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in free["params"]} == {n for n, p in model.named_parameters() if p.ndim == 1}
    assert all(n.endswith("bias") or ".bn" in n or "downsample.1" in n for n in map(names.get, map(id, free["params"])))
    assert len(parameter_groups(model, 1e-4, decay_norm_and_bias=True)) == 1
    settings = {"momentum": 0.9, "nesterov": True}
    kinds = {name: type(make_optimizer({**settings, "optimizer": name}, [decayed, free], 0.1)).__name__
             for name in ("sgd", "adam", "adamw", "rmsprop")}
    assert kinds == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
    assert make_optimizer({**settings, "optimizer": "sgd"}, [decayed, free], 0.1).defaults["nesterov"]
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; choose one of"):
        make_optimizer({**settings, "optimizer": "lion"}, [decayed], 0.1)


def test_objective_adds_the_auxiliary_loss_smooths_labels_and_mixes_up():
    ce = torch.nn.functional.cross_entropy
    logits, aux, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    objective = Objective(merge(DEFAULT_TRAINING, {"label_smoothing": 0.1}), seed=0)
    expected = ce(logits, labels, label_smoothing=0.1) + 0.4 * ce(aux, labels, label_smoothing=0.1)
    assert objective.loss((logits, aux), labels) == pytest.approx(expected.item())

    model = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    mixing = Objective(merge(DEFAULT_TRAINING, {"mixup": 0.4}), seed=1)
    rng = np.random.default_rng(1)
    lam, perm = rng.beta(0.4, 0.4), torch.from_numpy(rng.permutation(4))
    loss, out = mixing(model, x, labels)
    mixed = model(lam * x + (1 - lam) * x[perm])
    assert loss.item() == pytest.approx((lam * ce(mixed, labels) + (1 - lam) * ce(mixed, labels[perm])).item())
    plain, _ = Objective(DEFAULT_TRAINING, seed=1)(model, x, labels)
    assert plain.item() == pytest.approx(ce(model(x), labels).item())


def run_train_command(cell, shard, out, init=None):
    command = [sys.executable, "-m", "workflow", "train", "--cell", json.dumps(cell), "--shard", str(shard),
               "--out", str(out)] + (["--init", str(init)] if init else [])
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run(command, capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=300)


def test_a_cell_that_cannot_train_is_recorded_as_failed_and_seeds_no_one(shard, tmp_path):
    broken = make_cell(id="digits-012/resnet18/r16/broken", freeze="last:500")  # resnet18 has far fewer layers
    result = run_train_command(broken, shard, tmp_path / "broken")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "last:500" in metrics["error"]
    assert pd.read_csv(tmp_path / "broken" / "history.csv").empty
    assert "done: status failed" in result.stdout

    seeded = make_cell(id="digits-012/resnet18/r16/seeded", weights="pretrain:broken")
    result = run_train_command(seeded, shard, tmp_path / "seeded", init=tmp_path / "broken" / "best.pt")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "seeded" / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "holds no weights: cell digits-012/resnet18/r16/broken failed" in metrics["error"]
