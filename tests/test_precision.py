"""training.precision: auto picks bf16 only where the GPU has it natively, fp16 with a GradScaler otherwise;
the GradScaler's state goes into last.pt and a resumed fp16 run goes on with its loss scale."""

import json
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from histories import TIMING_COLUMNS
from conftest import make_cell
from test_training import quiet, start_training, steps_per_epoch
from workflow.core.cell import TrainingSettings
from workflow.train.cell import train_cell
from workflow.train.loop import train_step
from workflow.train.models import build_classifier, set_train_mode
from workflow.train.objective import Objective
from workflow.testing import SIGNAL_AT_STEP
from workflow.train.runtime import Precision, resolve_precision
from workflow.train.signals import EXIT_STOPPED
from workflow.train.state import LAST, LAST_FORMAT

CUDA = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a given compute capability major, which can emulate bf16 (as a V100 or T4 can)."""
    def with_major(major):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    return with_major


def test_auto_is_fp16_on_a_gpu_that_only_emulates_bf16(fake_gpu):
    fake_gpu(7)  # V100 (7.0), T4 (7.5)
    assert torch.cuda.is_bf16_supported()  # today's check counts the emulation
    assert resolve_precision("auto", CUDA) == "fp16"


def test_auto_is_bf16_on_ampere_and_later(fake_gpu):
    fake_gpu(8)
    assert resolve_precision("auto", CUDA) == "bf16"


def test_auto_is_fp32_on_the_cpu_and_explicit_values_hold():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert [resolve_precision(p, cpu) for p in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]
    with pytest.raises(ValueError, match="training.precision: unknown value 'fp8'"):
        resolve_precision("fp8", cpu)


def step(model, x, precision):
    labels = torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    set_train_mode(model, "all")
    return train_step(model, x, labels, Objective(TrainingSettings(), seed=0), optimizer, precision)


def test_fp16_steps_with_overflowing_gradients_are_skipped_not_diverged():
    torch.manual_seed(0)
    model, _ = build_classifier("resnet18", 3, "none", resolution=16)
    precision = Precision("fp16", torch.device("cpu"))
    assert precision.scaler is not None
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss, _ = step(model, torch.full((4, 3, 16, 16), float("inf")), precision)  # inf/NaN gradients
    assert precision.skipped_steps == 1 and torch.isfinite(loss)
    assert all(torch.equal(v, p) for (k, v), p in zip(before.items(), model.parameters()))  # no step taken
    first_scale = 2.0 ** 16  # GradScaler's initial scale; it halves at every skipped step
    assert precision.scaler.get_scale() == first_scale / 2
    for _ in range(20):  # until the scale is small enough for this model's fp16 gradients
        skipped = precision.skipped_steps
        loss, _ = step(model, torch.randn(4, 3, 16, 16), precision)
        assert torch.isfinite(loss) and loss > 0
        if precision.skipped_steps == skipped:
            break
    assert precision.scaler.get_scale() == first_scale / 2 ** precision.skipped_steps
    assert not torch.equal(before["head.1.weight"], model.head[1].weight)


def test_the_precision_is_recorded_in_metrics(shard, tmp_path):
    for precision in ("auto", "fp16"):
        training = {"precision": precision, "stages": [{"name": "all", "train": "all", "epochs": 1}]}
        metrics = train_cell(make_cell(training=training), shard, tmp_path / precision, threads=1, log=quiet)
        on_disk = json.loads((tmp_path / precision / "metrics.json").read_text())
        assert on_disk["run"]["precision"] == {"auto": "fp32", "fp16": "fp16"}[precision]
        assert metrics["status"] == "ok"  # skipped fp16 steps are no divergence
        assert (on_disk["run"]["skipped_fp16_steps"] > 0) == (precision == "fp16")


@pytest.mark.pipeline
def test_a_stopped_fp16_run_resumes_with_its_loss_scale_and_an_older_last_pt_still_resumes(shard, tmp_path):
    training = {"precision": "fp16", "deterministic": True, "stages": [{"name": "all", "train": "all", "epochs": 2}]}
    cell = make_cell(training=training)
    reference = train_cell(cell, shard, tmp_path / "reference", threads=1, log=quiet)
    out = tmp_path / "stopped"
    first = start_training(cell, shard, out, "run1.log", **{SIGNAL_AT_STEP: str(steps_per_epoch(shard) + 3)})
    assert first.wait(timeout=300) == EXIT_STOPPED, (tmp_path / "run1.log").read_text()
    saved = torch.load(out / LAST, weights_only=False)
    assert saved["format"] == LAST_FORMAT and saved["position"]["epoch"] == 2
    assert saved["amp"]["scaler"]["scale"] < 2.0 ** 16 and saved["amp"]["skipped_steps"] > 0  # it backed off
    older = tmp_path / "older"  # the same stop in last.pt's layout 2, without the precision's state
    shutil.copytree(out, older)
    torch.save({**{k: v for k, v in saved.items() if k != "amp"}, "format": 2}, older / LAST)

    resumed = train_cell(cell, shard, out, threads=1, log=quiet)
    # the signal counts optimizer steps, which the scaler's skipped steps are not
    assert resumed["run"]["resumes"] == [{"epoch": 1, "batch": saved["position"]["batches"], "signal": "SIGTERM"}]
    expected = pd.read_csv(tmp_path / "reference" / "history.csv").drop(columns=list(TIMING_COLUMNS))
    ours = pd.read_csv(out / "history.csv").drop(columns=list(TIMING_COLUMNS))
    pd.testing.assert_frame_equal(ours, expected, check_exact=True)
    assert resumed["run"]["skipped_fp16_steps"] == reference["run"]["skipped_fp16_steps"]

    messages = []
    from_older = train_cell(cell, shard, older, threads=1, log=messages.append)
    assert any("resuming from" in m for m in messages) and from_older["epochs_run"] == 2
    assert from_older["run"]["resumes"] == resumed["run"]["resumes"]
    # its loss scale started afresh: the steps it skips again are counted from the resume on
    assert from_older["run"]["skipped_fp16_steps"] != reference["run"]["skipped_fp16_steps"]
