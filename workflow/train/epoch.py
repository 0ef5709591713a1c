"""One epoch of a cell: the training pass, validation, the history row, the best weights so far,
the schedule and early stopping, and last.pt. A non-finite training loss or an out-of-memory error
ends the cell as `diverged` or `oom` (`RunState.status`; the job still writes its outputs and
succeeds); a stop signal writes last.pt and raises `Stopped`."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from workflow.data.device_split import DeviceSplit
from workflow.train.history import history_row, write_history
from workflow.train.job import Job
from workflow.train.loop import EpochPosition, EpochResult, predict, train_one_epoch
from workflow.train.optim import Stage
from workflow.train.signals import Stopped
from workflow.train.state import BEST_SO_FAR, RunState, save_checkpoint, save_last


def run_epoch(job: Job, state: RunState, stage: Stage, position: EpochPosition | None = None) -> None:
    """Train (from `position` if an earlier job began the epoch) and validate one epoch, then checkpoint."""
    epoch = state.epoch + 1
    position = position or EpochPosition(epoch)
    started = time.perf_counter() - position.seconds  # an earlier job's part of the epoch counts
    lr = stage.set_lr()
    result = train_pass(job, state, stage, position)
    if result is None or diverged(job, state, stage, result):
        return
    features = job.on_features(stage.name)
    predicted = predict_or_oom(job, state, job.features.val if features else job.val, "val", epoch, features)
    if predicted is None:
        return
    scores, val_loss = predicted
    val_accuracy = float(np.mean(scores.argmax(1) == job.val.labels.cpu().numpy()))
    record_epoch(job, state, stage, lr, result, val_loss, val_accuracy)
    improved = keep_best(job, state, val_accuracy)
    stage.schedule.step(val_accuracy)
    stop_early = stage.early_stopping.step(val_accuracy)
    count_time(state, stage, time.perf_counter() - started, improved)
    if stop_early:
        job.log(f"early stopping in stage {stage.name} after epoch {epoch}")
    if stop_early or state.stage_epoch >= stage.settings["epochs"]:
        state.stage_index, state.stage_epoch = state.stage_index + 1, 0
    save_last(job, state, stage)
    write_history(job.out_dir / "history.csv", state.history)


def train_pass(job: Job, state: RunState, stage: Stage, position: EpochPosition) -> EpochResult | None:
    """The epoch's training pass; None after an out-of-memory error (the cell ends as `oom`).
    A stop signal writes last.pt at `position` before `Stopped` goes on."""
    changes = len(job.micro.changes)
    try:
        return train_one_epoch(job, stage, position)
    except torch.OutOfMemoryError:
        batch_size = job.cell.batch_size
        state.status, state.oom = "oom", {"phase": "train", "epoch": position.epoch, "batch_size": batch_size}
        job.log(f"epoch {position.epoch} ({stage.name}): CUDA out of memory at batch size {batch_size}")
        return None
    except Stopped:
        save_last(job, state, stage, position, stopped_by=job.stop.signal)
        raise
    finally:
        for change in job.micro.changes[changes:]:
            job.log(f"epoch {change['epoch']}, batch {change['batch']}: out of memory on {change['batch_size']} "
                    f"images; from now on micro-batches of at most {change['micro_batch_size']} with their "
                    f"gradients accumulated (one optimizer step per batch; batch norm sees the micro-batch)")


def diverged(job: Job, state: RunState, stage: Stage, result: EpochResult) -> bool:
    """Whether the training loss is no longer finite (the cell then ends as `diverged`)."""
    if math.isfinite(result.loss):
        return False
    state.status, state.diverged_epoch = "diverged", state.epoch + 1
    job.log(f"epoch {state.epoch + 1} ({stage.name}): loss is not finite; the run diverged")
    return True


def predict_or_oom(job: Job, state: RunState, split: DeviceSplit, phase: str, epoch: int | None = None,
                   features: bool = False):
    """predict() on a validation (`phase` val) or test split: (scores, mean loss), or None after an
    out-of-memory error, which ends the cell as `oom`. With `features`, the split holds the backbone's
    cached features and the head alone scores them."""
    batch_size = job.cell.training.eval_batch_size
    try:
        if features:
            return predict(job.model.head, split, None, batch_size, job.amp)
        return predict(job.model, split, job.normalize, batch_size, job.amp)
    except torch.OutOfMemoryError:
        state.status, state.oom = "oom", {"phase": phase, "epoch": epoch, "batch_size": batch_size}
        where = "" if epoch is None else f"epoch {epoch}: "
        job.log(f"{where}CUDA out of memory {'validating' if phase == 'val' else 'testing'} at batch size {batch_size}")
        return None


def record_epoch(job: Job, state: RunState, stage: Stage, lr: float, result: EpochResult, val_loss: float,
                 val_accuracy: float) -> None:
    """Count a finished epoch in `state`, add its history row and log it."""
    state.epoch, state.stage_epoch = state.epoch + 1, state.stage_epoch + 1
    state.train_images += result.images
    state.train_seconds += result.seconds
    state.history.append(history_row(state.epoch, stage.settings, lr, result, val_loss, val_accuracy))
    job.log(f"epoch {state.epoch} ({stage.name}, lr {lr:.2e}): train loss {result.loss:.4f} "
            f"acc {result.accuracy:.4f} | val loss {val_loss:.4f} acc {val_accuracy:.4f} "
            f"| {result.images / result.seconds:.0f} img/s")
    if job.watch is not None:
        job.watch.epoch(state, stage.name)


def keep_best(job: Job, state: RunState, val_accuracy: float) -> bool:
    """Write best-so-far.pt if the epoch just counted has the best validation accuracy yet; whether it has."""
    if val_accuracy <= state.best_val_accuracy:
        return False
    state.best_val_accuracy, state.best_epoch = val_accuracy, state.epoch
    save_checkpoint(job.out_dir / BEST_SO_FAR, job.model, job.cell, job.normalization, state.epoch,
                    class_names=job.class_names, resize_method=job.resize_method)
    return True


def count_time(state: RunState, stage: Stage, seconds: float, improved: bool) -> None:
    """Add an epoch's wall time (validation and checkpoints included) to the run and its stage."""
    state.elapsed_s += seconds
    state.stage_seconds[stage.name] = state.stage_seconds.get(stage.name, 0.0) + seconds
    if improved:
        state.time_to_best_s = state.elapsed_s
