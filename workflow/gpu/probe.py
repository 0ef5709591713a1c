"""Measure the peak GPU memory of one combination's training (the ``probe_memory`` rule).

A few training steps (normalise, forward, backward, optimizer step) with every
layer trainable, then one evaluation pass at the evaluation batch size, on
synthetic uint8 batches that sit on the device as training's batches do;
the record holds ``torch.cuda.max_memory_allocated`` over all of it and the
device's total memory. The spec is ``workflow.gpu.slots.probe_spec``.

Without CUDA nothing can be measured: the record says so (``peak_mb`` null,
``device`` "cpu") and the cells of that combination take whole devices; so do
they when the probe runs out of memory on the whole device (``note`` says which).
"""

from __future__ import annotations

import time

import torch
import torchvision

from workflow.data.normalize import Normalizer
from workflow.train.models import PLAIN_MEAN, PLAIN_STD, set_trainable, build_classifier, set_train_mode
from workflow.core.cell import TrainingSettings
from workflow.train.loop import train_step
from workflow.train.objective import Objective
from workflow.train.optim import make_optimizer, parameter_groups
from workflow.train.runtime import Precision, configure_backends, pick_device

CLASSES = 10  # the head's width hardly matters next to the backbone's
OPTIMIZER_FOR_STATES = {0: ("sgd", 0.0), 1: ("sgd", 0.9), 2: ("adam", 0.0)}  # one with that many states per parameter


def measure(spec: dict, device: torch.device, steps: int = 3) -> dict:
    """Run `steps` training steps and an evaluation pass of `spec` on `device`; returns what it took
    (peak memory only on CUDA)."""
    started = time.perf_counter()
    configure_backends(device, deterministic=False)
    torch.manual_seed(0)
    classes = 2 if isinstance(spec["head"], dict) and spec["head"]["output"] == "sigmoid" else CLASSES  # one unit
    model, _ = build_classifier(spec["model"], classes, "none", head=spec["head"], resolution=spec["resolution"])
    model = model.to(device, memory_format=torch.channels_last)
    set_trainable(model, "all")
    optimizer_name, momentum = OPTIMIZER_FOR_STATES[spec["optimizer_states"]]
    stage = TrainingSettings(momentum=momentum).stage({"name": "probe", "train": "all", "epochs": 1},
                                                      optimizer_name, "all")
    optimizer = make_optimizer(stage, parameter_groups(model, 0.0, False), 1e-3)
    objective = Objective(TrainingSettings(), seed=0)
    precision = Precision(spec["precision"], device)
    normalize = Normalizer(PLAIN_MEAN, PLAIN_STD, device)
    size = spec["resolution"]

    def batch(n: int) -> torch.Tensor:  # N x H x W x 3 in memory, as DeviceSplit serves them
        return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, device=device).permute(0, 3, 1, 2)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    labels = torch.randint(0, classes, (spec["batch_size"],), device=device)
    set_train_mode(model, "all")
    for _ in range(steps):
        train_step(model, normalize(batch(spec["batch_size"])), labels, objective, optimizer, precision)
    model.eval()
    with torch.inference_mode(), precision.autocast():
        model(normalize(batch(spec["eval_batch_size"]))).float().softmax(1)
    record = {"steps": steps, "precision": precision.name, "seconds": None, "peak_mb": None, "reserved_mb": None,
              "device_mb": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        record.update(
            peak_mb=round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            reserved_mb=round(torch.cuda.max_memory_reserved(device) / 2**20, 1),
            device_mb=round(torch.cuda.get_device_properties(device).total_memory / 2**20, 1),
        )
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def probe(spec: dict, steps: int = 3, log=print) -> dict:
    """The probe's record for `spec` on this process's device (see the module's docstring)."""
    device = pick_device()
    record = {
        "spec": spec, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
    }
    if device.type != "cuda":
        log("no CUDA device: GPU memory cannot be measured; cells of this combination take whole devices")
        return {**record, "steps": 0, "precision": "fp32", "seconds": 0.0, "peak_mb": None, "reserved_mb": None,
                "device_mb": None, "note": "no CUDA device: nothing measured"}
    try:
        record.update(measure(spec, device, steps))
    except torch.OutOfMemoryError as error:  # more than the whole device: cells take it all (and record oom)
        log(f"out of memory on the whole device: {error}")
        return {**record, "steps": steps, "precision": None, "seconds": None, "peak_mb": None, "reserved_mb": None,
                "device_mb": round(torch.cuda.get_device_properties(device).total_memory / 2**20, 1),
                "note": "out of memory on the whole device"}
    log(f"{record['device']}: peak {record['peak_mb']} MB allocated ({record['reserved_mb']} MB reserved) "
        f"of {record['device_mb']} MB")
    return record
