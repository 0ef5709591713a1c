"""training.precision: auto picks bf16 only where the GPU has it natively, fp16 with a GradScaler otherwise."""

import json
from types import SimpleNamespace

import pytest
import torch

from test_training import make_cell, quiet
from workflow.study.settings import DEFAULT_TRAINING, merge
from workflow.train.cell import train_cell
from workflow.train.loop import train_step
from workflow.train.models import build_classifier, set_train_mode
from workflow.train.objective import Objective
from workflow.train.runtime import Precision, resolve_precision

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
    return train_step(model, x, labels, Objective(DEFAULT_TRAINING, seed=0), optimizer, precision)


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
        training = merge(make_cell()["training"], {"precision": precision,
                                                   "stages": [{"name": "all", "train": "all", "epochs": 1}]})
        metrics = train_cell(make_cell(training=training), shard, tmp_path / precision, threads=1, log=quiet)
        on_disk = json.loads((tmp_path / precision / "metrics.json").read_text())
        assert on_disk["run"]["precision"] == {"auto": "fp32", "fp16": "fp16"}[precision]
        assert metrics["status"] == "ok"  # skipped fp16 steps are no divergence
        assert (on_disk["run"]["skipped_fp16_steps"] > 0) == (precision == "fp16")
