"""One cell's training on real digits: stages, schedules, optimizers, history, checkpoints,
resuming a killed or signalled job (also through Snakemake's retries), micro-batches after an
out-of-memory error, and the diverged and out-of-memory paths."""

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from conftest import REPO, load_study_file, make_cell, train_command, write_config
from histories import TIMING_COLUMNS
from workflow.cli import main
from workflow.data.device_split import DeviceSplit
from workflow.data.prepare import prepare_dataset
from workflow.core.cell import DEFAULT_TRAINING, Cell, TrainingSettings, merge
from workflow.testing import OOM_ABOVE, OOM_AT_STEP, SIGNAL_AT_STEP, injected_faults
from workflow.train.cell import train_cell
from workflow.train.history import HISTORY_COLUMNS
from workflow.train.loop import MicroBatching, train_step
from workflow.train.models import build_classifier
from workflow.train.objective import Objective
from workflow.train.optim import EarlyStopping, Schedule, make_optimizer, parameter_groups
from workflow.train.signals import EXIT_STOPPED
from workflow.train.state import BEST_SO_FAR, LAST


def quiet(_):
    pass


@pytest.fixture(scope="module")
def trained(shard, tmp_path_factory):
    """`make_cell()` trained once on the shard, for the tests that only read what it wrote:
    (cell, metrics, its folder)."""
    cell, out = make_cell(), tmp_path_factory.mktemp("trained")
    return cell, train_cell(cell, shard, out, threads=1, log=quiet), out


def test_two_stage_training_writes_history_metrics_and_best_checkpoint(trained):
    cell, metrics, out = trained
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert history["stage"].tolist() == ["head", "head", "finetune", "finetune", "finetune"]
    assert history["train"].tolist() == ["head", "head", "all", "all", "all"]
    assert history["lr"].iloc[0] == pytest.approx(0.01) and history["lr"].iloc[2] == pytest.approx(0.001)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["status"] == "ok" and on_disk["epochs_run"] == 5
    best = history.loc[history["val_accuracy"].idxmax()]
    assert on_disk["best_epoch"] == best["epoch"]
    assert on_disk["best_val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert torch.load(out / "best.pt", weights_only=False)["epoch"] == best["epoch"]
    assert on_disk["config"] == json.loads(cell.to_json())
    assert 0 <= on_disk["test_accuracy"] <= 1 and sum(map(sum, on_disk["confusion_matrix"])) > 0
    assert on_disk["test_top5_accuracy"] is None and on_disk["test_auc"] is None  # 3 classes
    head, finetune = on_disk["stages"]
    assert (head["name"], head["train"], head["epochs_run"], head["lr"]) == ("head", "head", 2, 0.01)
    assert finetune["optimizer"] == "adam" and finetune["lr"] == pytest.approx(0.001)
    assert head["trainable_parameters"] == 512 * 3 + 3 < finetune["trainable_parameters"]
    assert head["wall_time_s"] > 0 and finetune["wall_time_s"] > 0
    assert 0 < on_disk["time_to_best_s"] <= head["wall_time_s"] + finetune["wall_time_s"] + 0.01  # each rounded
    assert on_disk["peak_memory_mb"] is None and on_disk["device"] == "cpu"
    assert set(on_disk["versions"]) >= {"python", "torch", "torchvision", "numpy"}
    assert on_disk["run"]["head"] == "gap" and on_disk["run"]["resumed_after_epochs"] == []
    assert "model" not in torch.load(out / LAST, weights_only=False)  # only the finished state stays


def test_a_finished_cell_keeps_the_best_weights_predictions_on_validation_and_test(trained):
    from workflow.train.predictions import read_predictions

    _, metrics, out = trained
    predictions = read_predictions(out)
    assert list(predictions.class_names) == ["0", "1", "2"]
    val_accuracy = float(np.mean(predictions.val_scores.argmax(1) == predictions.val_labels))
    assert val_accuracy == pytest.approx(metrics["best_val_accuracy"])  # the best epoch's weights
    assert float(np.mean(predictions.test_correct())) == pytest.approx(metrics["test_accuracy"])
    assert predictions.test_scores.sum(1) == pytest.approx(np.ones(len(predictions.test_labels)), abs=1e-5)
    assert sum(metrics["per_class"][name]["support"] for name in ["0", "1", "2"]) == len(predictions.test_labels)


def test_early_stopping_ends_a_stage(shard, tmp_path):
    cell = make_cell(training={"early_stopping": {"patience": 1}}, lr=1e-9)  # nothing improves
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
    cell = make_cell(training=merge(DEFAULT_TRAINING, {"stages": [{"name": "all", "train": "all", "epochs": 1}]}))
    metrics = train_cell(cell, tmp_path / "r16.h5", tmp_path / "cell", log=quiet)
    assert 0 <= metrics["test_auc"] <= 1 and 0 <= metrics["test_false_negative_rate"] <= 1
    assert metrics["test_false_negative_rate"] == pytest.approx(1 - metrics["per_class"]["8"]["recall"])


def test_out_of_memory_is_recorded_with_the_batch_size_and_the_job_succeeds(shard, tmp_path, monkeypatch):
    monkeypatch.setenv(OOM_AT_STEP, "13")  # 11 steps of 32 per epoch: the second step of epoch 2
    cell = make_cell()
    main(train_command(cell, shard, tmp_path)[3:])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "oom"
    assert metrics["oom"] == {"phase": "train", "epoch": 2, "batch_size": 32}
    assert metrics["epochs_run"] == 1 and metrics["best_epoch"] == 1 and metrics["test_accuracy"] is not None
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1 and (tmp_path / "best.pt").exists()


def test_last_checkpoint_of_another_config_is_not_resumed(shard, tmp_path):
    torch.save({"fingerprint": {"cell": "another"}}, tmp_path / LAST)
    messages = []
    cell = make_cell(training=merge(DEFAULT_TRAINING, {"stages": [{"name": "all", "train": "all", "epochs": 1}]}))
    metrics = train_cell(cell, shard, tmp_path, log=messages.append)
    assert any("not resuming" in m and "belongs to another cell config" in m for m in messages)
    assert metrics["epochs_run"] == 1 and metrics["run"]["resumed_after_epochs"] == []


def start_training(cell, shard, out, log_name, **env_vars):
    """`python -m workflow train` for one cell, as the train rule runs it (with `env_vars` added)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **env_vars)
    log = open(out.parent / log_name, "w")
    return subprocess.Popen(
        train_command(cell, shard, out, threads=1),
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


@pytest.mark.pipeline
def test_killed_job_resumes_to_the_same_history_as_an_uninterrupted_run(shard, tmp_path):
    training = merge(DEFAULT_TRAINING, {
        "stages": [{"name": "head", "train": "head", "epochs": 2, "optimizer": "sgd", "nesterov": True},
                   {"name": "finetune", "train": "cell", "epochs": 3, "lr_factor": 0.1, "warmup_epochs": 1,
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


def steps_per_epoch(shard, batch_size=32):
    return -(-len(DeviceSplit.load(shard, "train", torch.device("cpu"))) // batch_size)


@pytest.mark.pipeline
@pytest.mark.parametrize("memory_share", [0.5, 0.0], ids=["device-split", "streamed-split"])
def test_a_stop_signal_checkpoints_mid_epoch_and_the_retry_ends_with_the_same_history(shard, tmp_path, memory_share):
    training = merge(DEFAULT_TRAINING, {
        "stages": [{"name": "head", "train": "head", "epochs": 2, "optimizer": "sgd", "nesterov": True},
                   {"name": "finetune", "train": "cell", "epochs": 2, "lr_factor": 0.1}],
        "augment": {"hflip": True}, "mixup": 0.2, "label_smoothing": 0.1, "deterministic": True,
        "loader": {"memory_share": memory_share, "workers": 0, "buffer_chunks": 2},  # 0: stream every split
    })
    cell = make_cell(training=training)
    steps = steps_per_epoch(shard)  # 11: 322 images in batches of 32
    reference = start_training(cell, shard, tmp_path / "reference", "reference.log")
    out = tmp_path / "stopped"
    # each run sends itself SIGTERM before its N-th step and stops right after it, at a batch boundary
    first = start_training(cell, shard, out, "run1.log", **{SIGNAL_AT_STEP: str(steps + 5)})
    assert first.wait(timeout=300) == EXIT_STOPPED, (tmp_path / "run1.log").read_text()
    log1 = (tmp_path / "run1.log").read_text()
    assert "stopped by SIGTERM in epoch 2 after 5 batches" in log1 and "exiting with status 75" in log1
    saved = torch.load(out / LAST, weights_only=False)
    assert saved["stopped_by"] == "SIGTERM" and saved["state"]["epoch"] == 1
    assert saved["position"]["epoch"] == 2 and saved["position"]["batches"] == 5
    assert saved["position"]["seen"] == 5 * 32
    assert (out / BEST_SO_FAR).exists()  # best weights so far: not an output, so Snakemake keeps them
    assert not (out / "metrics.json").exists() and not (out / "best.pt").exists()

    # the next run picks up at batch 6 of epoch 2 and is stopped inside epoch 3, the second stage's first
    second = start_training(cell, shard, out, "run2.log", **{SIGNAL_AT_STEP: str(steps - 5 + 4)})
    assert second.wait(timeout=300) == EXIT_STOPPED, (tmp_path / "run2.log").read_text()
    log2 = (tmp_path / "run2.log").read_text()
    assert "after epoch 1 and 5 batches of epoch 2 (the last job was stopped by SIGTERM)" in log2
    assert "stopped by SIGTERM in epoch 3 after 4 batches" in log2
    third = start_training(cell, shard, out, "run3.log")
    assert third.wait(timeout=300) == 0 and reference.wait(timeout=300) == 0, (tmp_path / "run3.log").read_text()

    expected = pd.read_csv(tmp_path / "reference" / "history.csv").drop(columns=list(TIMING_COLUMNS))
    resumed = pd.read_csv(out / "history.csv").drop(columns=list(TIMING_COLUMNS))
    assert resumed["epoch"].tolist() == [1, 2, 3, 4]  # no gap, no repeat
    pd.testing.assert_frame_equal(resumed, expected, check_exact=True)
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "reference"))
    for key in ("status", "test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "confusion_matrix"):
        assert ours[key] == theirs[key], key
    assert ours["run"]["resumes"] == [{"epoch": 1, "batch": 5, "signal": "SIGTERM"},
                                      {"epoch": 2, "batch": 4, "signal": "SIGTERM"}]
    assert ours["run"]["resumed_after_epochs"] == [1, 2] and theirs["run"]["resumes"] == []
    assert torch.load(out / "best.pt", weights_only=False)["epoch"] == ours["best_epoch"]
    assert torch.load(out / LAST, weights_only=False)["finished"] and os.path.samefile(out / BEST_SO_FAR, out / "best.pt")


def find_trainer(workdir: Path) -> int | None:
    """The pid of the `python -m workflow train` running in `workdir` (a test's own folder)."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if args[1:4] == [b"-m", b"workflow", b"train"] and cwd == workdir.resolve():
            return int(proc.name)
    return None


@pytest.mark.pipeline
def test_snakemake_retries_a_signalled_training_job_which_resumes_mid_run(tmp_path):
    config = {
        "study": "signalled",
        "datasets": {"digits-012": {"source": "digits", "classes": [0, 1, 2], "seed": 0,
                                    "split": {"train": 0.6, "val": 0.2, "test": 0.2}}},
        "grid": {"dataset": ["digits-012"], "model": ["resnet18"], "resolution": [16], "batch_size": [32],
                 "lr": [0.01], "optimizer": ["adam"], "weights": ["none"]},
        "training": {"stages": [{"name": "head", "train": "head", "epochs": 2},
                                {"name": "finetune", "train": "all", "epochs": 4, "lr_factor": 0.1}],
                     "deterministic": True},
        "resources": {"train_threads": 1},
    }
    configfile = write_config(tmp_path / "study.yaml", config)
    cell = "digits-012/resnet18/r16/bs32-lr1e-2-adam-all-s0-wnone"
    folder = tmp_path / "work/results/signalled/cells" / cell
    args = [f"results/signalled/cells/{cell}/metrics.json", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(tmp_path / "work"), "--cores", "2", "--retries", "1", "--configfile", str(configfile)]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "snakemake.out"  # a file, not a pipe that nobody reads while it runs
    with open(out, "w") as sink:
        run = subprocess.Popen([sys.executable, "-m", "snakemake", *args], stdout=sink, stderr=subprocess.STDOUT,
                               env=env)
    try:
        deadline = time.monotonic() + 300
        while not (folder / LAST).exists():  # an epoch is done
            assert run.poll() is None and time.monotonic() < deadline, out.read_text()[-4000:]
            time.sleep(0.05)
        pid = find_trainer(tmp_path / "work")
        assert pid is not None
        os.kill(pid, signal.SIGTERM)  # what SLURM sends at the time limit
        run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out.read_text()[-6000:]
    # the attempt failed with the trainer's status; Snakemake deleted its outputs and ran it again
    (log,) = (tmp_path / "work/.snakemake/log").glob("*.snakemake.log")
    log = log.read_text()
    assert log.count("localrule train:") == 2 and "Trying to restart job" in log, log[-6000:]
    assert "stopped by SIGTERM" in log and "Removing output files of failed job train" in log
    metrics = json.loads((folder / "metrics.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    assert metrics["status"] == "ok" and history["epoch"].tolist() == list(range(1, 7))
    (resume,) = metrics["run"]["resumes"]
    assert resume["signal"] == "SIGTERM" and resume["epoch"] >= 1, resume
    assert torch.load(folder / "best.pt", weights_only=False)["epoch"] == metrics["best_epoch"]
    assert "resuming from" in (tmp_path / "work/results/signalled/logs/train" / f"{cell}.log").read_text()

    # the same cell, never stopped
    manifest = tmp_path / "work" / load_study_file(configfile).manifest_path("digits-012", 16)
    train_cell(Cell.from_json(metrics["config"]), manifest, tmp_path / "reference", log=quiet)
    expected = pd.read_csv(tmp_path / "reference" / "history.csv")
    pd.testing.assert_frame_equal(history.drop(columns=list(TIMING_COLUMNS)),
                                  expected.drop(columns=list(TIMING_COLUMNS)), check_exact=True)


def micro_batch_cell(**training):
    """One stage with the backbone frozen (its batch norms in eval mode) and no dropout: micro-batches
    then compute what the whole batch would, up to floating-point rounding."""
    return make_cell(training=merge(DEFAULT_TRAINING, {
        "stages": [{"name": "head", "train": "head", "epochs": 3}], "dropout": 0.0, "mixup": 0.2,
        "label_smoothing": 0.1, "augment": {"hflip": True}, "deterministic": True, **training}))


def count_optimizer_steps():
    counter = {"steps": 0}

    def hook(optimizer, args, kwargs):
        counter["steps"] += 1

    return counter, register_optimizer_step_post_hook(hook)


def test_out_of_memory_steps_go_on_in_micro_batches_with_the_same_history(shard, tmp_path):
    cell = micro_batch_cell(oom_micro_batches=True)
    counter, handle = count_optimizer_steps()
    try:
        reference = train_cell(cell, shard, tmp_path / "reference", log=quiet)
        reference_steps, counter["steps"] = counter["steps"], 0
        messages = []
        with injected_faults({OOM_ABOVE: "12"}):  # more than 12 images in a forward pass: out of memory
            metrics = train_cell(cell, shard, tmp_path / "micro", log=messages.append)
    finally:
        handle.remove()
    assert reference_steps == counter["steps"] == 3 * steps_per_epoch(shard)  # the effective batch size stays
    assert metrics["status"] == "ok" and metrics["oom"] is None
    assert metrics["micro_batch_size"] == 8 and reference["micro_batch_size"] is None  # 32 -> 2 x 16 -> 4 x 8
    assert metrics["run"]["micro_batches"] == [{"epoch": 1, "batch": 1, "batch_size": 32, "micro_batch_size": 8}]
    assert any("epoch 1, batch 1: out of memory on 32 images; from now on micro-batches of at most 8" in m
               for m in messages)
    expected = pd.read_csv(tmp_path / "reference" / "history.csv").drop(columns=list(TIMING_COLUMNS))
    micro = pd.read_csv(tmp_path / "micro" / "history.csv").drop(columns=list(TIMING_COLUMNS))
    pd.testing.assert_frame_equal(micro, expected, check_exact=False, rtol=1e-4, atol=1e-6)
    assert metrics["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=1e-9)


def test_out_of_memory_without_micro_batches_or_below_two_images_ends_the_cell_as_oom(shard, tmp_path):
    with injected_faults({OOM_ABOVE: "12"}):
        metrics = train_cell(micro_batch_cell(), shard, tmp_path / "off", log=quiet)  # oom_micro_batches: false
    assert metrics["status"] == "oom" and metrics["oom"] == {"phase": "train", "epoch": 1, "batch_size": 32}
    assert metrics["micro_batch_size"] is None and metrics["epochs_run"] == 0

    cell = micro_batch_cell(oom_micro_batches=True, stages=[{"name": "all", "train": "all", "epochs": 1}])
    with injected_faults({OOM_ABOVE: "1"}):  # training batch norms cannot take micro-batches of one image
        metrics = train_cell(cell, shard, tmp_path / "floor", log=quiet)
    assert metrics["status"] == "oom" and metrics["micro_batch_size"] == 2 and metrics["run"]["micro_batches"] == []


def test_micro_batches_accumulate_the_whole_batch_gradient_with_mixup_and_inceptions_aux_loss():
    torch.manual_seed(0)
    whole, _ = build_classifier("inception_v3", 3, "none", resolution=299)
    x, labels = torch.randn(4, 3, 299, 299), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():  # running statistics of this batch, so that activations stay in range
        for module in whole.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = 1.0
        whole.train()(x)
    for module in whole.modules():  # batch norms and dropout as in a frozen backbone: no batch statistics
        if isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)):
            module.eval()
    split = copy.deepcopy(whole)
    training = TrainingSettings(mixup=0.4, label_smoothing=0.1)
    results = {}
    for name, model, micro, faults in [
        ("whole", whole, None, {}),
        ("split", split, MicroBatching(allowed=True), {OOM_ABOVE: "2"}),
    ]:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # leaves the gradients for a look
        with injected_faults(faults):
            results[name] = train_step(model, x, labels, Objective(training, seed=3), optimizer, False, micro)
    assert micro.size == 2  # 4 images ran out of memory: two micro-batches of 2
    (loss, correct), (split_loss, split_correct) = results["whole"], results["split"]
    assert split_loss.item() == pytest.approx(loss.item(), rel=1e-5) and split_correct == correct
    for (name, p), q in zip(whole.named_parameters(), split.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item(), msg=name)
    assert split.backbone.AuxLogits.fc.weight.grad.abs().sum() > 0  # the auxiliary loss took part


def test_schedules_warm_up_then_plateau_cosine_or_step():
    settings = TrainingSettings(warmup_epochs=2).stage({"name": "s", "train": "all", "epochs": 6}, "sgd", "all")

    def lrs(schedule_settings, accuracies):
        schedule, seen = Schedule(schedule_settings, 1.0), []
        for accuracy in accuracies:
            seen.append(schedule.lr())
            schedule.step({"val_accuracy": accuracy, "val_loss": 1.0})
        return seen

    cosine = lrs({**settings, "schedule": "cosine", "cosine": {"min_lr_factor": 0.1}}, [0.5] * 6)
    assert cosine[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]) and cosine[-1] == pytest.approx(0.1)
    assert cosine[3] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 3)) / 2)
    step = lrs({**settings, "warmup_epochs": 0, "schedule": "step", "step": {"every": 2, "factor": 0.5}}, [0] * 6)
    assert step == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    plateau = {**settings, "warmup_epochs": 0, "plateau": {**settings["plateau"], "patience": 1, "factor": 0.1}}
    assert lrs(plateau, [0.5, 0.4, 0.4, 0.6, 0.6, 0.6]) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1])
    schedule = Schedule(plateau, 1.0)
    for accuracy in [0.5, 0.4, 0.4]:
        schedule.step({"val_accuracy": accuracy, "val_loss": 1.0})
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
    settings = {"momentum": 0.9, "nesterov": True, "rho": 0.99, "eps": None}
    kinds = {name: type(make_optimizer({**settings, "optimizer": name}, [decayed, free], 0.1)).__name__
             for name in ("sgd", "adam", "adamw", "rmsprop")}
    assert kinds == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
    assert make_optimizer({**settings, "optimizer": "sgd"}, [decayed, free], 0.1).defaults["nesterov"]
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; choose one of"):
        make_optimizer({**settings, "optimizer": "lion"}, [decayed], 0.1)


def test_objective_adds_the_auxiliary_loss_smooths_labels_and_mixes_up():
    ce = torch.nn.functional.cross_entropy
    logits, aux, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    objective = Objective(TrainingSettings(label_smoothing=0.1), seed=0)
    expected = ce(logits, labels, label_smoothing=0.1) + 0.4 * ce(aux, labels, label_smoothing=0.1)
    assert objective.loss((logits, aux), labels) == pytest.approx(expected.item())

    model = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    mixing = Objective(TrainingSettings(mixup=0.4), seed=1)
    rng = np.random.default_rng(1)
    lam, perm = rng.beta(0.4, 0.4), torch.from_numpy(rng.permutation(4))
    inputs, targets = mixing.mix(x, labels)
    loss = mixing.score(model(inputs), targets)
    mixed = model(lam * x + (1 - lam) * x[perm])
    assert loss.item() == pytest.approx((lam * ce(mixed, labels) + (1 - lam) * ce(mixed, labels[perm])).item())
    plain_objective = Objective(TrainingSettings(), seed=1)
    plain = plain_objective.score(model(x), plain_objective.mix(x, labels)[1])
    assert plain.item() == pytest.approx(ce(model(x), labels).item())


def run_train_command(cell, shard, out, init=None):
    command = train_command(cell, shard, out, init)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run(command, capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=300)


@pytest.mark.pipeline
def test_a_cell_that_cannot_train_is_recorded_as_failed_and_seeds_no_one(shard, tmp_path):
    # at batch size 1 every batch is one image, which training skips (batch norm cannot train on it): a
    # value that loads and can only fail at training (one that can fail at load is refused there)
    broken = make_cell(batch_size=1)
    result = run_train_command(broken, shard, tmp_path / "broken")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"].startswith("SplitTooSmallError: the training split has")
    assert pd.read_csv(tmp_path / "broken" / "history.csv").empty
    assert "done: status failed" in result.stdout

    seeded = make_cell(weights="pretrain:broken")
    result = run_train_command(seeded, shard, tmp_path / "seeded", init=tmp_path / "broken" / "best.pt")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "seeded" / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert f"holds no weights: cell {broken.id} failed" in metrics["error"]


@pytest.mark.pipeline
def test_a_bug_fails_the_job_loudly_and_records_no_result(shard, tmp_path):
    missing = tmp_path / "no-such-manifest.json"  # a missing input is the machine's or tlsweep's fault, not the cell's
    result = run_train_command(make_cell(), missing, tmp_path / "buggy")
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr and "no-such-manifest.json" in result.stderr
    assert not (tmp_path / "buggy" / "metrics.json").exists() and not (tmp_path / "buggy" / "best.pt").exists()


def test_early_stopping_counts_epochs_without_a_better_accuracy_and_resumes():
    stopping = EarlyStopping(2, "val_accuracy", 0.0)
    assert [stopping.step({"val_accuracy": accuracy}) for accuracy in [0.5, 0.4, 0.6, 0.6]] == [False] * 4
    again = EarlyStopping(2, "val_accuracy", 0.0)
    again.load_state_dict(stopping.state_dict())
    assert again.step({"val_accuracy": 0.55}) and (again.progress.best, again.since_best) == (0.6, 2)


def test_faults_are_injected_only_when_asked_for_and_removed_afterwards():
    model, _ = build_classifier("resnet18", 3, "none")
    x = torch.randn(4, 3, 32, 32)
    with injected_faults({}) as faults:
        assert faults is None
        model.train()(x)
    with injected_faults({OOM_ABOVE: "3"}):
        model.eval()(x)  # evaluation passes are never failed
        with pytest.raises(torch.OutOfMemoryError, match="injected by TLSWEEP_INJECT_OOM_ABOVE=3: 4 images"):
            model.train()(x)
        model.train()(x[:3])
    model.train()(x)
