"""What one cell's training works with (`Job`), and setting it up from the cell's config: threads,
device and backends, seeds, the prepared dataset's splits, the model and its starting weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from workflow.core.cell import Cell
from workflow.data.batches import load_splits
from workflow.data.device_split import DeviceSplit
from workflow.data.normalize import Normalizer
from workflow.data.resize import RESIZE_METHOD
from workflow.data.shards import read_class_names, read_resize_method
from workflow.train.features import CachedFeatures, stage_inputs
from workflow.train.loop import MicroBatching
from workflow.train.models import Classifier, build_classifier
from workflow.train.objective import Objective
from workflow.train.runtime import Precision, configure_backends, pick_device, seed_everything
from workflow.train.signals import StopFlag
from workflow.train.state import run_fingerprint


@dataclass
class Job:
    """What one cell's training works with."""

    cell: Cell
    model: Classifier
    normalization: tuple  # (mean, std) the model's input is normalised with
    class_names: list[str]
    train: DeviceSplit
    val: DeviceSplit
    test: DeviceSplit
    normalize: Normalizer  # augments (training.augment) and normalises a batch
    device: torch.device
    amp: Precision  # training.precision on this device: autocast (bf16, fp16 with a GradScaler) or fp32
    threads: int
    out_dir: Path  # the cell's folder
    fingerprint: dict  # what its last.pt must have been written for (state.run_fingerprint)
    generator: torch.Generator  # shuffles and augments the training split
    objective: Objective
    log: Callable[[str], None]
    stop: StopFlag
    micro: MicroBatching
    watch: object = None  # the Watcher told how training goes (workflow.train.watcher)
    resize_method: str = RESIZE_METHOD  # the manifest's: how its images were resized
    features: CachedFeatures | None = None  # the backbone's cached features, when a stage trains on them
    stage_inputs: dict = field(default_factory=dict)  # {stage: {"input": features | images, "reason": ...}}

    def on_features(self, stage: str) -> bool:
        """Whether stage `stage` trains the head on the cached features instead of the images."""
        return self.stage_inputs.get(stage, {}).get("input") == "features"


def open_job(cell: Cell, manifest: str | Path, out_dir: str | Path, init: str | Path | None = None,
             threads: int = 1, log=print, stop: StopFlag | None = None, features: str | Path | None = None) -> Job:
    """Set up one cell's training from the cell, its dataset's `manifest` (a single shard file works too),
    the checkpoint `init` that its weights may start from and the cached `features` its head stages may
    train on (workflow.train.head_input says which stages do)."""
    training = cell.training
    torch.set_num_threads(threads)
    device = pick_device()
    configure_backends(device, training.deterministic)
    seed_everything(cell.seed)
    class_names = read_class_names(manifest)
    train, val, test = load_splits(manifest, ("train", "val", "test"), device, training.loader)
    model, normalization = build_classifier(cell.model, len(class_names), cell.weights, training.dropout,
                                            init, head=training.head, resolution=cell.resolution)
    model = model.to(device, memory_format=torch.channels_last)
    if training.compile:
        model.compile()
    amp = Precision(training.precision, device)
    inputs, cached = stage_inputs(cell, features, {"train": train, "val": val, "test": test}, amp.name, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return Job(
        cell=cell, model=model, normalization=normalization, class_names=class_names,
        train=train, val=val, test=test, normalize=Normalizer(*normalization, device, training.augment),
        device=device, amp=amp,
        threads=threads, out_dir=Path(out_dir), fingerprint=run_fingerprint(cell, manifest, init),
        generator=torch.Generator().manual_seed(cell.seed), objective=Objective(training, cell.seed),
        log=log, stop=stop or StopFlag(), micro=MicroBatching(allowed=training.oom_micro_batches),
        resize_method=read_resize_method(manifest), features=cached, stage_inputs=inputs,
    )
