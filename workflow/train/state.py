"""A cell's run state and its checkpoints.

`RunState` is what training tracks across epochs and stages. last.pt, written
atomically after every epoch and when a stop signal ends a run, holds it with
the model, the stage's optimizer, schedule and early stopping, fp16's GradScaler, every random
state and the position inside an epoch. A job with the same cell config and
input files (by content: a manifest or pretrain checkpoint written again with the same bytes is the
same input) resumes from it, and on the CPU in deterministic mode ends with the
same history as a run that was never stopped. best-so-far.pt holds the best
weights so far; it and best.pt, its copy, describe themselves (`checkpoint_description`): enough to
rebuild the model without tlsweep's config and to prepare its input (workflow.export.checkpoint).

Once a cell is complete, last.pt shrinks to the finished run state (`save_finished`: no weights, no
optimizer) and best-so-far.pt stays, a hard link of best.pt: a job killed after its outputs are
written, whose outputs Snakemake then deletes, is finished again by the rerun without training; so is
a finished cell that Snakemake runs again because an input of it was made again with the same content.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from workflow.atomic import atomic_path
from workflow.core.cell import Cell
from workflow.integrity import file_stamp, load_torch
from workflow.data.resize import RESIZE_METHOD
from workflow.core import paths
from workflow.train.loop import EpochPosition, MicroBatching
from workflow.train.models import num_classes_of
from workflow.train.optim import Stage
from workflow.train.runtime import versions

if TYPE_CHECKING:
    from workflow.train.job import Job

LAST = paths.LAST_PT
BEST_SO_FAR = paths.BEST_SO_FAR_PT
LAST_FORMAT = 3  # the layout of last.pt: 3 adds the precision's state (fp16's GradScaler) to 2
RESUMABLE_FORMATS = (2, 3)  # last.pt layouts that resume (2: fp16's loss scale starts afresh)
CHECKPOINT_FORMAT = 2  # the layout of best.pt: 2 describes itself (1: weights, model name, head, cell only)


@dataclass
class RunState:
    """What the training loop tracks across epochs and stages; saved in last.pt."""

    history: list[dict] = field(default_factory=list)
    best_val_accuracy: float = -1.0
    best_epoch: int | None = None
    status: str = "ok"
    diverged_epoch: int | None = None
    oom: dict | None = None  # {"phase", "epoch", "batch_size"} of an out-of-memory failure
    epoch: int = 0  # epochs finished, all stages together
    stage_index: int = 0
    stage_epoch: int = 0  # epochs finished in the current stage
    train_images: int = 0
    train_seconds: float = 0.0
    elapsed_s: float = 0.0  # wall time of the epochs so far, validation included
    time_to_best_s: float | None = None
    stage_seconds: dict = field(default_factory=dict)
    stage_trainable: dict = field(default_factory=dict)  # stage name -> trainable parameter count
    resumed_after: list[int] = field(default_factory=list)  # epochs after which the job was restarted
    # one per restart: {"epoch": epochs finished, "batch": batches done in the next one (None: at the
    # epoch's end), "signal": what stopped the attempt before (None: it was killed)}
    resumes: list[dict] = field(default_factory=list)
    wall_time_s: float | None = None  # the time of the job that finished training (set when it finishes)


def run_fingerprint(cell: Cell, manifest, init) -> dict:
    """What a last.pt must have been written for to be resumed: the cell (its JSON) and the content of
    its input files (size and SHA-256: the manifest, which holds its shards' checksums, and `init`)."""
    return {"cell": json.loads(cell.to_json()), "manifest": file_stamp(manifest),
            "init": file_stamp(init) if init else None}


def checkpoint_versions() -> dict:
    """The versions of tlsweep and of the libraries a checkpoint was written with."""
    try:
        tlsweep = version("tlsweep")
    except PackageNotFoundError:  # run from a checkout that is not installed
        tlsweep = None
    return {"tlsweep": tlsweep, **versions()}


def checkpoint_description(model, cell: Cell, normalization, class_names: list[str] | None,
                           resize_method: str = RESIZE_METHOD) -> dict:
    """What a checkpoint says about its model besides the weights: how to rebuild it (model name,
    head, classes, resolution, whether InceptionV3's auxiliary classifier is there) and how its
    input is prepared (resolution, the manifest's resize method, normalisation), the cell config and the versions."""
    mean, std = normalization
    return {
        "format": CHECKPOINT_FORMAT, "model_name": cell.model, "head": model.head_kind,
        "num_classes": num_classes_of(model), "class_names": None if class_names is None else list(class_names),
        "resolution": cell.resolution, "resize_method": resize_method,
        "aux_classifier": getattr(model.backbone, "AuxLogits", None) is not None,
        "normalization": (tuple(mean), tuple(std)), "cell": json.loads(cell.to_json()), "versions": checkpoint_versions(),
    }


def save_checkpoint(path: Path, model, cell: Cell, normalization, epoch: int,
                    class_names: list[str] | None = None, resize_method: str = RESIZE_METHOD) -> None:
    """Write the model weights and their description (`checkpoint_description`), atomically."""
    description = checkpoint_description(model, cell, normalization, class_names, resize_method)
    save_torch({"model": model.state_dict(), **description, "epoch": epoch}, path)


def save_torch(obj, path: Path) -> None:
    """torch.save, atomically, through a file object: a write error (a full disk, a file-size limit)
    is then an OSError, which atomic_path reports as a StorageError naming `path` and the cause."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as error:  # torch's stream writer hides the OSError of a failed write
            if isinstance(error.__context__, OSError):
                raise error.__context__ from error
            raise


def rng_states(job: Job) -> dict:
    """Every random state the training loop draws from."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "shuffle": job.generator.get_state(),
        "mixup": job.objective.rng.bit_generator.state,
    }


def restore_rng_states(job: Job, states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    job.generator.set_state(states["shuffle"])
    job.objective.rng.bit_generator.state = states["mixup"]


def precision_state(job: Job) -> dict:
    """fp16's GradScaler state (loss scale, growth tracker; None without a scaler) and its skipped steps."""
    scaler = job.amp.scaler
    return {"scaler": None if scaler is None else scaler.state_dict(), "skipped_steps": job.amp.skipped_steps}


def restore_precision_state(job: Job, saved: dict) -> None:
    """Put back `precision_state` from a last.pt; one without it (layout 2) leaves the precision fresh."""
    amp = saved.get("amp")
    if amp is None:
        return
    if job.amp.scaler is not None and amp["scaler"] is not None:
        job.amp.scaler.load_state_dict(amp["scaler"])
    job.amp.skipped_steps = amp["skipped_steps"]


def save_last(job: Job, state: RunState, stage: Stage, position: EpochPosition | None = None,
              stopped_by: str | None = None) -> None:
    """The resumable checkpoint, written atomically: at an epoch's end, or inside one at `position`."""
    save_torch({
        "format": LAST_FORMAT, "fingerprint": job.fingerprint, "model": job.model.state_dict(),
        "stage": stage.state_dict(), "state": asdict(state), "rng": rng_states(job),
        "micro": asdict(job.micro), "amp": precision_state(job),
        "position": None if position is None else asdict(position), "stopped_by": stopped_by,
    }, job.out_dir / LAST)


def save_finished(job: Job, state: RunState) -> dict:
    """last.pt of a complete cell: its final run state and the stamp of best-so-far.pt (= best.pt),
    which it returns."""
    stamp = file_stamp(job.out_dir / BEST_SO_FAR)
    save_torch({"format": LAST_FORMAT, "fingerprint": job.fingerprint, "finished": True, "best": stamp,
                "state": asdict(state), "micro": asdict(job.micro),
                "amp": precision_state(job)}, job.out_dir / LAST)
    return stamp


def finished_state(job: Job, saved: dict) -> RunState | None:
    """The run state of a finished last.pt whose best-so-far.pt is still the one it finished with."""
    best = job.out_dir / BEST_SO_FAR
    if not best.exists() or file_stamp(best) != saved["best"]:
        job.log(f"not finishing from {job.out_dir / LAST}: {best} is missing or changed; training afresh")
        return None
    job.log(f"the cell finished training in an earlier job ({job.out_dir / LAST}): writing its outputs again")
    return RunState(**saved["state"])


def load_last(path: Path, fingerprint: dict, log) -> dict | None:
    """The resumable checkpoint at `path` if there is one for this very cell config and inputs."""
    if not path.exists():
        return None
    try:
        checkpoint = load_torch(path, map_location="cpu", weights_only=False)
    except OSError as error:
        log(f"not resuming: {error}")
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        log(f"not resuming: {path} belongs to another cell config or other input files")
        return None
    if checkpoint.get("format") not in RESUMABLE_FORMATS:
        log(f"not resuming: {path} was written by another version of tlsweep")
        return None
    return checkpoint


def resume_run(job: Job) -> tuple[RunState, dict | None, EpochPosition | None]:
    """Where the job's run stands: from the job folder's last.pt when it fits (its model weights, random
    states and micro-batching are restored into `job`), else at the start. Returns the run state, the
    saved stage state (optimizer, schedule, early stopping) and the position inside an epoch."""
    path = job.out_dir / LAST
    saved = load_last(path, job.fingerprint, job.log)
    finished = saved is not None and saved.get("finished") and finished_state(job, saved)
    if finished:
        job.micro = MicroBatching(**saved["micro"])
        restore_precision_state(job, saved)
        return finished, None, None
    if saved is None or saved.get("finished") or saved["state"]["best_epoch"] is None:
        (job.out_dir / BEST_SO_FAR).unlink(missing_ok=True)  # best weights of an earlier, unrelated run
    if saved is None or saved.get("finished"):
        return RunState(), None, None
    job.model.load_state_dict(saved["model"])
    state = RunState(**saved["state"])
    restore_rng_states(job, saved["rng"])
    job.micro = MicroBatching(**saved["micro"])
    restore_precision_state(job, saved)
    position, stopped_by = EpochPosition.restore(saved["position"], job.device), saved["stopped_by"]
    state.resumed_after.append(state.epoch)
    state.resumes.append({"epoch": state.epoch, "batch": position.batches if position else None,
                          "signal": stopped_by})
    job.log(f"resuming from {path} after epoch {state.epoch}"
            + (f" and {position.batches} batches of epoch {position.epoch}" if position else "")
            + (f" (the last job was stopped by {stopped_by})" if stopped_by else ""))
    return state, saved["stage"], position
