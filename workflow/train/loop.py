"""The training pass: optimisation steps (in micro-batches after an out-of-memory error), one epoch
over the training split that a stop signal can end at a batch boundary and a later job can go on
from (`EpochPosition`), and the predictions for a whole split."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from workflow.data.device_split import DeviceSplit
from workflow.data.normalize import Normalizer
from workflow.train.errors import SplitTooSmallError
from workflow.train.models import batch_norm_training, set_train_mode
from workflow.train.objective import Objective, logits_of
from workflow.train.optim import Stage
from workflow.train.runtime import Precision
from workflow.train.signals import Stopped

if TYPE_CHECKING:
    from workflow.train.job import Job


@dataclass
class MicroBatching:
    """training.oom_micro_batches: after an out-of-memory error a training batch is split into twice
    as many micro-batches as it had; `size` (None: whole batches) then holds for the rest of the cell."""

    allowed: bool = False
    size: int | None = None  # the working micro-batch size
    changes: list[dict] = field(default_factory=list)  # {"epoch", "batch", "batch_size", "micro_batch_size"}

    def split_further(self, batch: int, smallest: int) -> None:
        """After an out-of-memory error on a batch of `batch` images: halve the micro-batches,
        or raise torch.OutOfMemoryError when they would get smaller than `smallest`."""
        current = min(self.size or batch, batch)
        size = -(-batch // (2 * -(-batch // current)))  # ceil(batch / twice the parts it had)
        if size < smallest or size >= current:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory at batch size {batch}, even in micro-batches of {current} images")
        self.size = size


def train_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, objective: Objective,
               optimizer: torch.optim.Optimizer, precision: Precision | None,
               micro: MicroBatching | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns the batch's summed loss and correct count as tensors (no sync).

    `precision` (None: fp32) autocasts, and for fp16 scales the loss; a step the scaler skips for
    inf/NaN gradients adds no loss (so it does not read as divergence).

    With `micro`, the batch goes through the model in micro-batches of at most `micro.size` images,
    each one's loss weighted by its share of the batch and the gradients accumulated, so the
    optimizer still steps once per batch. An out-of-memory error then frees what the attempt held
    and retries the batch (same mixup draw) in twice as many micro-batches, if `micro.allowed`.
    """
    inputs, targets = objective.mix(x, labels)
    while True:
        try:
            return accumulate_step(model, inputs, targets, labels, objective, optimizer,
                                   precision or Precision("fp32", inputs.device), micro.size if micro else None)
        except torch.OutOfMemoryError:
            if micro is None or not micro.allowed:
                raise
        # outside the except block, so that the failed attempt's tensors are already released
        optimizer.zero_grad(set_to_none=True)
        if inputs.device.type == "cuda":
            torch.cuda.empty_cache()
        micro.split_further(len(labels), smallest=2 if batch_norm_training(model) else 1)


def accumulate_step(model, inputs, targets, labels, objective: Objective, optimizer, precision: Precision,
                    micro_batch_size: int | None):
    """Zero the gradients, run the batch forward and backward in nearly equal micro-batches of at
    most `micro_batch_size` images (None: whole), step the optimizer once; (summed loss, correct)."""
    n = len(labels)
    parts = 1 if micro_batch_size is None else -(-n // micro_batch_size)
    optimizer.zero_grad(set_to_none=True)
    total_loss = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    start = 0
    for i in range(parts):
        stop = start + n // parts + (i < n % parts)
        part = slice(start, stop)
        with precision.autocast():
            output = model(inputs[part])
            loss = objective.score(output, targets, part)
        precision.backward(loss if parts == 1 else loss * ((stop - start) / n))
        total_loss += loss.detach() * (stop - start)
        correct += (logits_of(output).argmax(1) == labels[part]).sum()
        start = stop
    if not precision.step(optimizer):  # fp16's scaler skipped it: an overflow, not a diverged run
        total_loss = torch.where(total_loss.isfinite(), total_loss, torch.zeros_like(total_loss))
    return total_loss, correct


@dataclass
class EpochPosition:
    """How far an epoch's training pass got: enough for another process to go on from there."""

    epoch: int  # 1-based, all stages together
    shuffle_state: torch.Tensor | None = None  # the shuffle generator before the epoch drew its order
    batches: int = 0  # batches done (a skipped one-image batch counts)
    loss_sum: torch.Tensor | None = None  # summed training loss of the images seen, on the device
    correct: torch.Tensor | None = None
    seen: int = 0
    seconds: float = 0.0  # training time so far

    @classmethod
    def restore(cls, saved: dict | None, device: torch.device) -> "EpochPosition | None":
        if saved is None:
            return None
        position = cls(**saved)
        position.loss_sum, position.correct = position.loss_sum.to(device), position.correct.to(device)
        return position


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float


def epoch_batches(split: DeviceSplit, batch_size: int, generator: torch.Generator, position: EpochPosition):
    """The training batches of `position`'s epoch that are still to come. A new epoch (no shuffle
    state yet) draws its order from `generator`; a begun one redraws the order it had and leaves
    `generator` where it was."""
    if position.shuffle_state is None:
        position.shuffle_state = generator.get_state()
        position.loss_sum = torch.zeros((), device=split.labels.device)
        position.correct = torch.zeros((), dtype=torch.long, device=split.labels.device)
        return split.batches(batch_size, generator)
    now = generator.get_state()
    generator.set_state(position.shuffle_state)
    batches = split.batches(batch_size, generator, skip=position.batches)
    generator.set_state(now)
    return batches


def train_one_epoch(job: Job, stage: Stage, position: EpochPosition) -> EpochResult:
    """One pass over the job's training split, or the rest of one: `position` (updated as it goes)
    says how far it got. A diverged run shows as a non-finite loss. A stop signal ends the pass at
    the next batch boundary with `Stopped`."""
    set_train_mode(job.model, stage.settings["train"])
    features = job.on_features(stage.name)  # the head alone, on the backbone's cached features
    batches = epoch_batches(job.features.train if features else job.train, job.cell.batch_size, job.generator,
                            position)
    start = time.perf_counter()
    for images, labels in batches:
        if job.stop.signal:
            position.seconds += time.perf_counter() - start
            raise Stopped(job.stop.signal, position.epoch - 1, position)
        if len(labels) > 1:  # batch norm cannot train on a single image
            train_batch(job, stage, position, images, labels, features)
        position.batches += 1
        if job.watch is not None:
            job.watch.batch(position, stage.name)
    position.seconds += time.perf_counter() - start
    if position.seen == 0:
        raise SplitTooSmallError(f"the training split has {len(job.train)} image(s); batch norm needs at least 2")
    loss, accuracy = position.loss_sum.item() / position.seen, position.correct.item() / position.seen
    return EpochResult(loss, accuracy, position.seen, position.seconds)


def train_batch(job: Job, stage: Stage, position: EpochPosition, images: torch.Tensor, labels: torch.Tensor,
                features: bool = False):
    """Augment and normalise one batch, take the optimisation step, add it to `position`. With `features`,
    `images` are the backbone's cached features and the step trains the head on them."""
    x = images if features else job.normalize(images, job.generator)  # augmented as training.augment says
    size = job.micro.size
    model = job.model.head if features else job.model
    batch_loss, hits = train_step(model, x, labels, job.objective, stage.optimizer, job.amp, job.micro)
    if job.micro.size != size:
        job.micro.changes.append({"epoch": position.epoch, "batch": position.batches + 1,
                                  "batch_size": len(labels), "micro_batch_size": job.micro.size})
    position.loss_sum += batch_loss
    position.correct += hits
    position.seen += len(labels)


@torch.inference_mode()
def predict(model, split: DeviceSplit, normalize: Normalizer | None, batch_size: int, precision: Precision | None = None):
    """Softmax scores for a whole split, and its mean cross-entropy loss (`normalize` None: the split holds
    the backbone's features and `model` is the head)."""
    model.eval()
    scores, total_loss = [], torch.zeros((), device=split.labels.device)
    for images, labels in split.batches(batch_size):
        with precision.autocast() if precision else contextlib.nullcontext():
            logits = model(images if normalize is None else normalize(images)).float()
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum")
        scores.append(logits.softmax(1))
    return torch.cat(scores).cpu().numpy(), total_loss.item() / len(split)
