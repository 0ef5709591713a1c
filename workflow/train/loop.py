"""Train one cell: its stages, schedules, early stopping, checkpoints, and metrics.

Every epoch ends with ``last.pt`` in the cell's folder (model, optimizer,
schedule, RNG states, run state and history), written atomically; a job
started again with the same cell config and input files resumes from it and,
on the CPU in deterministic mode, ends with the same history as a run that
was never stopped.

Stop signals: SIGTERM (SLURM's time limit, preemption, scancel) and the
warning signals SIGURG and SIGUSR1 (SLURM's ``--signal``, see rules/train.smk)
only set a flag (``StopFlag``, installed by ``python -m workflow train``).
The training loop checks it at every batch boundary and epoch end, writes
``last.pt`` with the epoch's position (batches done, the shuffle generator's
state when the epoch drew its order, the partial loss and accuracy sums) and
raises ``Stopped``; the command then exits with status 75 (``EXIT_STOPPED``)
so that Snakemake's retry resumes mid-epoch, with the same history as a run
that was never stopped (CPU, deterministic mode).

Snakemake deletes the outputs of a failed job, so while a cell trains its best
weights live in ``best-so-far.pt``; best.pt and metrics.json are written only
once the cell is complete (history.csv also after every epoch, as a progress
view rebuilt from last.pt). ``last.pt`` and ``best-so-far.pt`` are removed
once metrics.json is written, unless the job trained to a budget
(``until_epoch``): then both stay for a later job to continue from
(successive halving's rungs, workflow/halving.py).

A non-finite training loss ends the cell as ``diverged``, a CUDA out-of-memory
error as ``oom``; either way the job writes all its outputs and succeeds. With
``training.oom_micro_batches`` an out-of-memory training step is first retried
in 2, 4, ... micro-batches with their gradients accumulated (one optimizer
step per batch, so the effective batch size stays; batch norm sees the
micro-batch), and the working micro-batch size is kept for the rest of the cell.

Test hooks (``FaultHooks``), read from the environment:

- ``TLSWEEP_INJECT_OOM_AT_STEP=N``: the first forward pass of the job's N-th
  training step raises ``torch.OutOfMemoryError``;
- ``TLSWEEP_INJECT_OOM_ABOVE=N``: every training forward pass of more than N
  images raises it;
- ``TLSWEEP_SIGNAL_AT_STEP=N``: the process sends itself SIGTERM just before
  its N-th training step, so it stops right after that step (only for
  ``python -m workflow train``, which handles the signal).
"""

from __future__ import annotations

import csv
import math
import os
import pickle
import platform
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from torch import nn

from workflow.atomic import atomic_path, write_json
from workflow.data.batches import DeviceSplit, Normalizer, load_splits
from workflow.train.metrics import classification_report
from workflow.train.models import Classifier, set_trainable, batch_norm_training, build_classifier, set_train_mode
from workflow.data.shards import read_class_names
from workflow.study.settings import stage_settings

HISTORY_COLUMNS = [
    "epoch", "stage", "train", "lr", "train_loss", "train_accuracy",
    "val_loss", "val_accuracy", "seconds", "images_per_s",
]
TIMING_COLUMNS = ("seconds", "images_per_s")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("cosine", "plateau", "step")
OOM_HOOK = "TLSWEEP_INJECT_OOM_AT_STEP"
OOM_ABOVE_HOOK = "TLSWEEP_INJECT_OOM_ABOVE"
SIGNAL_HOOK = "TLSWEEP_SIGNAL_AT_STEP"
LAST = "last.pt"
BEST_SO_FAR = "best-so-far.pt"
# SIGTERM: the time limit or preemption; SIGURG: the warning rules/train.smk asks SLURM for (every
# other process of the job step ignores it); SIGUSR1: the usual warning signal elsewhere.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGURG, signal.SIGUSR1)
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, try again


def pick_device() -> torch.device:
    """The GPU when there is one, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms for repeatable runs; on a GPU otherwise cuDNN autotuning and TF32."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
        torch.set_float32_matmul_precision("highest" if deterministic else "high")


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Trainable parameters; 1-D ones (biases, norm scales and shifts) get no weight decay unless asked."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def make_optimizer(settings: dict, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam, AdamW or RMSprop (momentum) by name."""
    name = settings["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=settings["momentum"], nesterov=settings["nesterov"])
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=settings["momentum"])
    raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


class Schedule:
    """A stage's learning rate per epoch: optional linear warm-up, then plateau, cosine or step."""

    def __init__(self, settings: dict, base_lr: float):
        if settings["schedule"] not in SCHEDULES:
            raise ValueError(f"unknown schedule {settings['schedule']!r}; choose one of {list(SCHEDULES)}")
        self.settings = settings
        self.base_lr = base_lr
        self.epoch = 0  # epochs finished in this stage
        self.scale = 1.0  # plateau: the product of its cuts so far
        self.best = -math.inf
        self.bad_epochs = 0

    def lr(self) -> float:
        """The learning rate of the next epoch."""
        s, warmup = self.settings, self.settings["warmup_epochs"]
        if self.epoch < warmup:
            return self.base_lr * (self.epoch + 1) / (warmup + 1)
        t = self.epoch - warmup
        if s["schedule"] == "step":
            return self.base_lr * s["step"]["factor"] ** (t // s["step"]["every"])
        if s["schedule"] == "cosine":
            span = max(s["epochs"] - warmup - 1, 1)
            low = self.base_lr * s["cosine"]["min_lr_factor"]
            return low + (self.base_lr - low) * (1 + math.cos(math.pi * min(t / span, 1.0))) / 2
        return self.base_lr * self.scale

    def step(self, val_accuracy: float) -> None:
        """End an epoch; the plateau schedule cuts after more than `patience` epochs without progress."""
        self.epoch += 1
        if self.settings["schedule"] != "plateau" or self.epoch <= self.settings["warmup_epochs"]:
            return
        if val_accuracy > self.best:
            self.best, self.bad_epochs = val_accuracy, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.settings["plateau"]["patience"]:
                self.scale *= self.settings["plateau"]["factor"]
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class Objective:
    """The training loss: cross-entropy with label smoothing, InceptionV3's auxiliary share, mixup."""

    def __init__(self, training: dict, seed: int):
        self.criterion = nn.CrossEntropyLoss(label_smoothing=training["label_smoothing"])
        self.aux_weight = training["aux_loss_weight"]
        self.mixup = training["mixup"]
        self.rng = np.random.default_rng(seed)  # mixup's draws; its state is checkpointed

    def loss(self, output, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(output, tuple):  # (logits, auxiliary logits)
            return self.criterion(output[0].float(), labels) + self.aux_weight * self.criterion(output[1].float(), labels)
        return self.criterion(output.float(), labels)

    def mix(self, x: torch.Tensor, labels: torch.Tensor):
        """(what the model sees, targets): mixup blends the batch with a shuffled copy of itself,
        drawn here once per batch (so micro-batches share it); without mixup, the batch itself."""
        if self.mixup > 0:
            lam = float(self.rng.beta(self.mixup, self.mixup))
            perm = torch.from_numpy(self.rng.permutation(len(labels))).to(labels.device)
            return lam * x + (1 - lam) * x[perm], (labels, labels[perm], lam)
        return x, (labels, None, 1.0)

    def score(self, output, targets, part: slice = slice(None)) -> torch.Tensor:
        """The mean loss of `output` against the images `part` of `targets` (from `mix`)."""
        labels, mixed_with, lam = targets
        if mixed_with is None:
            return self.loss(output, labels[part])
        return lam * self.loss(output, labels[part]) + (1 - lam) * self.loss(output, mixed_with[part])


def logits_of(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # (logits, auxiliary logits) in training


class FaultHooks:
    """The test hooks of the module docstring (TLSWEEP_INJECT_OOM_AT_STEP, TLSWEEP_INJECT_OOM_ABOVE,
    TLSWEEP_SIGNAL_AT_STEP), read from `environ`; all off when it sets none of them."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.oom_at_step = int(environ.get(OOM_HOOK) or 0)
        self.oom_above = int(environ.get(OOM_ABOVE_HOOK) or 0)
        self.signal_at_step = int(environ.get(SIGNAL_HOOK) or 0)
        self.steps = 0  # training steps begun by this process
        self.injected_at_step = False

    def before_step(self) -> None:
        """Call once before each training step."""
        self.steps += 1
        if self.steps == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)

    def before_forward(self, images: int) -> None:
        """Call before each forward pass of a training step (one per micro-batch)."""
        if self.oom_at_step and self.steps == self.oom_at_step and not self.injected_at_step:
            self.injected_at_step = True
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {OOM_HOOK}={self.oom_at_step})")
        if self.oom_above and images > self.oom_above:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {OOM_ABOVE_HOOK}={self.oom_above}: "
                                         f"{images} images)")


NO_HOOKS = FaultHooks({})


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
               optimizer: torch.optim.Optimizer, amp: bool, micro: MicroBatching | None = None,
               hooks: FaultHooks = NO_HOOKS) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns the batch's summed loss and correct count as tensors (no sync).

    With `micro`, the batch goes through the model in micro-batches of at most `micro.size` images,
    each one's loss weighted by its share of the batch and the gradients accumulated, so the
    optimizer still steps once per batch. An out-of-memory error then frees what the attempt held
    and retries the batch (same mixup draw) in twice as many micro-batches, if `micro.allowed`.
    """
    inputs, targets = objective.mix(x, labels)
    while True:
        try:
            return accumulate_step(model, inputs, targets, labels, objective, optimizer, amp,
                                   micro.size if micro else None, hooks)
        except torch.OutOfMemoryError:
            if micro is None or not micro.allowed:
                raise
        # outside the except block, so that the failed attempt's tensors are already released
        optimizer.zero_grad(set_to_none=True)
        if inputs.device.type == "cuda":
            torch.cuda.empty_cache()
        micro.split_further(len(labels), smallest=2 if batch_norm_training(model) else 1)


def accumulate_step(model, inputs, targets, labels, objective: Objective, optimizer, amp: bool,
                    micro_batch_size: int | None, hooks: FaultHooks = NO_HOOKS):
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
        hooks.before_forward(stop - start)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
            output = model(inputs[part])
            loss = objective.score(output, targets, part)
        (loss if parts == 1 else loss * ((stop - start) / n)).backward()
        total_loss += loss.detach() * (stop - start)
        correct += (logits_of(output).argmax(1) == labels[part]).sum()
        start = stop
    optimizer.step()
    return total_loss, correct


class StopFlag:
    """Set by a stop signal (see the module docstring); the training loop checks it at batch boundaries."""

    def __init__(self):
        self.signal: str | None = None  # the first stop signal's name

    def __call__(self, signum, frame=None) -> None:
        self.signal = self.signal or signal.Signals(signum).name

    def install(self, signals=STOP_SIGNALS) -> "StopFlag":
        """Make `signals` set this flag (main thread only), instead of their default action."""
        for sig in signals:
            signal.signal(sig, self)
        return self


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


class Stopped(Exception):
    """A stop signal ended training; last.pt holds where it stood."""

    def __init__(self, signal_name: str, epochs: int, position: EpochPosition | None = None):
        self.signal, self.epochs, self.position = signal_name, epochs, position
        where = f"after epoch {epochs}" if position is None else \
            f"in epoch {position.epoch} after {position.batches} batches"
        super().__init__(f"stopped by {signal_name} {where}: last.pt holds the run; exiting with status "
                         f"{EXIT_STOPPED} so that a retry resumes it")


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float


def train_one_epoch(model, split: DeviceSplit, normalize: Normalizer, optimizer, objective: Objective,
                    batch_size: int, train: str, generator: torch.Generator, amp: bool,
                    hooks: FaultHooks = NO_HOOKS, *, position: EpochPosition | None = None,
                    stop: StopFlag | None = None, micro: MicroBatching | None = None) -> EpochResult:
    """One pass over the training split, or the rest of one: `position` (updated as it goes) says
    how far it got; one without a shuffle state is a new epoch. A diverged run shows as a non-finite
    loss. A set `stop` flag ends the pass at the next batch boundary with `Stopped`."""
    set_train_mode(model, train)
    device = split.labels.device
    position = position or EpochPosition(epoch=0)
    if position.shuffle_state is None:  # a new epoch: its order comes next from the generator
        position.shuffle_state = generator.get_state()
        position.loss_sum = torch.zeros((), device=device)
        position.correct = torch.zeros((), dtype=torch.long, device=device)
        batches = split.batches(batch_size, generator)
    else:  # redraw the epoch's order, then go on with the generator where it was
        now = generator.get_state()
        generator.set_state(position.shuffle_state)
        batches = split.batches(batch_size, generator, skip=position.batches)
        generator.set_state(now)
    start = time.perf_counter()
    for images, labels in batches:
        if stop is not None and stop.signal:
            position.seconds += time.perf_counter() - start
            raise Stopped(stop.signal, position.epoch - 1, position)
        if len(labels) > 1:  # batch norm cannot train on a single image
            hooks.before_step()
            x = normalize(images, generator)  # augmented as training.augment says
            size = micro.size if micro else None
            batch_loss, hits = train_step(model, x, labels, objective, optimizer, amp, micro, hooks)
            if micro and micro.size != size:
                micro.changes.append({"epoch": position.epoch, "batch": position.batches + 1,
                                      "batch_size": len(labels), "micro_batch_size": micro.size})
            position.loss_sum += batch_loss
            position.correct += hits
            position.seen += len(labels)
        position.batches += 1
    position.seconds += time.perf_counter() - start
    if position.seen == 0:
        raise ValueError(f"the training split has {len(split)} image(s); batch norm needs at least 2")
    loss, accuracy = position.loss_sum.item() / position.seen, position.correct.item() / position.seen
    return EpochResult(loss, accuracy, position.seen, position.seconds)


@torch.inference_mode()
def predict(model, split: DeviceSplit, normalize: Normalizer, batch_size: int, amp: bool = False):
    """Softmax scores for a whole split, and its mean cross-entropy loss."""
    model.eval()
    scores, total_loss = [], torch.zeros((), device=split.labels.device)
    for images, labels in split.batches(batch_size):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(normalize(images)).float()
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum")
        scores.append(logits.softmax(1))
    return torch.cat(scores).cpu().numpy(), total_loss.item() / len(split)


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
    stage_best: float = -1.0
    since_best: int = 0  # early stopping's count
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


@dataclass
class Job:
    """What one cell's training loop works with."""

    cell: dict
    model: Classifier
    train: DeviceSplit
    val: DeviceSplit
    normalize: Normalizer
    normalization: tuple
    out_dir: Path
    fingerprint: dict
    generator: torch.Generator  # shuffles and flips the training split
    objective: Objective
    amp: bool
    log: Callable[[str], None]
    hooks: FaultHooks
    stop: StopFlag
    micro: MicroBatching


def save_checkpoint(path: Path, model, cell: dict, normalization, epoch: int) -> None:
    """Write the model weights and what is needed to reuse them, atomically."""
    with atomic_path(path) as tmp:
        torch.save(
            {"model": model.state_dict(), "model_name": cell["model"], "head": model.head_kind,
             "cell": cell, "normalization": normalization, "epoch": epoch},
            tmp,
        )


def file_identity(path) -> dict:
    """Enough of a file's identity to notice that it was replaced."""
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


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


def save_last(job: Job, state: RunState, optimizer, schedule: Schedule, position: EpochPosition | None = None,
              stopped_by: str | None = None) -> None:
    """The resumable checkpoint, written atomically: at an epoch's end, or inside one at `position`."""
    with atomic_path(job.out_dir / LAST) as tmp:
        torch.save({
            "fingerprint": job.fingerprint, "model": job.model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "state": asdict(state), "rng": rng_states(job),
            "micro": asdict(job.micro),
            "position": None if position is None else asdict(position), "stopped_by": stopped_by,
        }, tmp)


def load_last(path: Path, fingerprint: dict, log) -> dict | None:
    """The resumable checkpoint at `path` if there is one for this very cell config and inputs."""
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        log(f"not resuming: {path} is unreadable ({error})")
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        log(f"not resuming: {path} belongs to another cell config or other input files")
        return None
    return checkpoint


def write_history(path: Path, rows: list[dict]) -> None:
    """One CSV row per epoch, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def resolved_stages(cell: dict) -> list[dict]:
    """The cell's stages with every setting resolved."""
    return [stage_settings(cell["training"], stage, cell["optimizer"], cell["train"])
            for stage in cell["training"]["stages"]]


def run_epoch(job: Job, state: RunState, stage: dict, optimizer, schedule: Schedule,
              position: EpochPosition | None = None) -> None:
    """Train (from `position` if the epoch was begun by an earlier job) and validate one epoch, then
    checkpoint; a failure only sets state.status, a stop signal checkpoints and raises `Stopped`."""
    cell, training = job.cell, job.cell["training"]
    epoch = state.epoch + 1
    position = position or EpochPosition(epoch)
    started = time.perf_counter() - position.seconds  # an earlier job's part of the epoch counts
    lr = schedule.lr()
    for group in optimizer.param_groups:
        group["lr"] = lr
    micro_changes = len(job.micro.changes)
    try:
        result = train_one_epoch(job.model, job.train, job.normalize, optimizer, job.objective, cell["batch_size"],
                                 stage["train"], job.generator, job.amp, job.hooks, position=position,
                                 stop=job.stop, micro=job.micro)
    except torch.OutOfMemoryError:
        state.status, state.oom = "oom", {"phase": "train", "epoch": epoch, "batch_size": cell["batch_size"]}
        job.log(f"epoch {epoch} ({stage['name']}): CUDA out of memory at batch size {cell['batch_size']}")
        return
    except Stopped:
        save_last(job, state, optimizer, schedule, position, stopped_by=job.stop.signal)
        raise
    finally:
        for change in job.micro.changes[micro_changes:]:
            job.log(f"epoch {change['epoch']}, batch {change['batch']}: out of memory on {change['batch_size']} "
                    f"images; from now on micro-batches of at most {change['micro_batch_size']} with their "
                    f"gradients accumulated (one optimizer step per batch; batch norm sees the micro-batch)")
    if not math.isfinite(result.loss):
        state.status, state.diverged_epoch = "diverged", epoch
        job.log(f"epoch {epoch} ({stage['name']}): loss is not finite; the run diverged")
        return
    try:
        scores, val_loss = predict(job.model, job.val, job.normalize, training["eval_batch_size"], job.amp)
    except torch.OutOfMemoryError:
        state.status, state.oom = "oom", {"phase": "val", "epoch": epoch, "batch_size": training["eval_batch_size"]}
        job.log(f"epoch {epoch}: CUDA out of memory validating at batch size {training['eval_batch_size']}")
        return
    val_accuracy = float(np.mean(scores.argmax(1) == job.val.labels.cpu().numpy()))
    state.epoch, state.stage_epoch = epoch, state.stage_epoch + 1
    state.train_images += result.images
    state.train_seconds += result.seconds
    state.history.append({
        "epoch": epoch, "stage": stage["name"], "train": stage["train"], "lr": lr,
        "train_loss": result.loss, "train_accuracy": result.accuracy,
        "val_loss": val_loss, "val_accuracy": val_accuracy,
        "seconds": round(result.seconds, 4), "images_per_s": round(result.images / result.seconds, 1),
    })
    job.log(f"epoch {epoch} ({stage['name']}, lr {lr:.2e}): train loss {result.loss:.4f} "
            f"acc {result.accuracy:.4f} | val loss {val_loss:.4f} acc {val_accuracy:.4f} "
            f"| {result.images / result.seconds:.0f} img/s")
    improved = val_accuracy > state.best_val_accuracy
    if improved:
        state.best_val_accuracy, state.best_epoch = val_accuracy, epoch
        save_checkpoint(job.out_dir / BEST_SO_FAR, job.model, cell, job.normalization, epoch)
    schedule.step(val_accuracy)
    if val_accuracy > state.stage_best:
        state.stage_best, state.since_best = val_accuracy, 0
    else:
        state.since_best += 1
    seconds = time.perf_counter() - started
    state.elapsed_s += seconds
    state.stage_seconds[stage["name"]] = state.stage_seconds.get(stage["name"], 0.0) + seconds
    if improved:
        state.time_to_best_s = state.elapsed_s
    stopped = state.since_best >= stage["early_stopping"]["patience"]
    if stopped:
        job.log(f"early stopping in stage {stage['name']} after epoch {epoch}")
    if stopped or state.stage_epoch >= stage["epochs"]:
        state.stage_index, state.stage_epoch, state.stage_best, state.since_best = state.stage_index + 1, 0, -1.0, 0
    save_last(job, state, optimizer, schedule)
    write_history(job.out_dir / "history.csv", state.history)


def run_stages(job: Job, state: RunState, resume: dict | None = None, position: EpochPosition | None = None,
               until_epoch: int | None = None) -> None:
    """Train through the cell's stages from where `state` (and `position`, inside an epoch) stands,
    keeping the best checkpoint; with `until_epoch`, stop once that many epochs (all stages together)
    are done. A stop signal ends it with `Stopped` once last.pt is written."""
    stages = resolved_stages(job.cell)

    def budget_left() -> bool:
        return until_epoch is None or state.epoch < until_epoch

    while state.stage_index < len(stages) and state.status == "ok" and budget_left():
        index, stage = state.stage_index, stages[state.stage_index]
        set_trainable(job.model, stage["train"])
        state.stage_trainable[stage["name"]] = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
        base_lr = job.cell["lr"] * stage["lr_factor"]
        optimizer = make_optimizer(
            stage, parameter_groups(job.model, stage["weight_decay"], stage["decay_norm_and_bias"]), base_lr)
        schedule = Schedule(stage, base_lr)
        if resume is not None and (state.stage_epoch > 0 or position is not None):  # it stopped inside this stage
            optimizer.load_state_dict(resume["optimizer"])
            schedule.load_state_dict(resume["schedule"])
        resume = None
        while state.stage_index == index and state.status == "ok" and budget_left():
            run_epoch(job, state, stage, optimizer, schedule, position)
            position = None
            if job.stop.signal and state.status == "ok" and state.stage_index < len(stages):
                # the signal came while validating or checkpointing: stop at the epoch's end
                save_last(job, state, optimizer, schedule, stopped_by=job.stop.signal)
                raise Stopped(job.stop.signal, state.epoch)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict:
    """The library versions a result was produced with."""
    return {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": np.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def stage_summaries(cell: dict, state: RunState) -> list[dict]:
    """Each stage's resolved settings, epochs run, trainable parameters and wall time."""
    rows = []
    for stage in resolved_stages(cell):
        name = stage["name"]
        rows.append({
            **stage, "lr": cell["lr"] * stage["lr_factor"],
            "epochs_run": sum(1 for row in state.history if row["stage"] == name),
            "trainable_parameters": state.stage_trainable.get(name),
            "wall_time_s": round(state.stage_seconds[name], 3) if name in state.stage_seconds else None,
        })
    return rows


def record_failure(cell: dict, out_dir: str | Path, error: BaseException) -> dict:
    """Write a failed cell's outputs: metrics.json with status `failed` and the error, an empty
    history.csv and a best.pt that says it holds no weights (so seeded cells fail clearly too)."""
    out_dir = Path(out_dir)
    message = f"{type(error).__name__}: {error}"
    with atomic_path(out_dir / "best.pt") as tmp:
        torch.save({"failed": True, "cell": cell["id"], "error": message}, tmp)
    write_history(out_dir / "history.csv", [])
    metrics = {"cell": cell["id"], "status": "failed", "error": message, "versions": versions(), "config": cell}
    write_json(out_dir / "metrics.json", metrics)  # last, as for a finished cell
    return metrics


def train_cell(cell: dict, shard: str | Path, out_dir: str | Path, init: str | Path | None = None,
               threads: int = 1, log=print, stop: StopFlag | None = None, until_epoch: int | None = None) -> dict:
    """Train one cell from its resolved config (resuming last.pt if it fits); writes
    metrics.json, history.csv and best.pt. A set `stop` flag (see StopFlag) ends it early
    with `Stopped` and last.pt, and no outputs.

    With `until_epoch` (a budget, all stages together) training stops after that many epochs,
    the best checkpoint so far is evaluated, and last.pt and best-so-far.pt stay: a later call
    with a larger budget continues from them (successive halving's rungs, workflow/halving.py)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    training = cell["training"]
    torch.set_num_threads(threads)
    device = pick_device()
    configure_backends(device, training["deterministic"])
    seed_everything(cell["seed"])
    class_names = read_class_names(shard)
    train, val, test = load_splits(shard, ("train", "val", "test"), device, training["loader"])
    model, normalization = build_classifier(cell["model"], len(class_names), cell["weights"], training["dropout"],
                                            init, head=training["head"], resolution=cell["resolution"])
    model = model.to(device, memory_format=torch.channels_last)
    if training["compile"]:
        model.compile()
    amp = training["bf16"] and device.type == "cuda" and torch.cuda.is_bf16_supported()
    job = Job(
        cell=cell, model=model, train=train, val=val, normalize=Normalizer(*normalization, device, training["augment"]),
        normalization=normalization, out_dir=out_dir,
        fingerprint={"cell": cell, "shard": file_identity(shard), "init": file_identity(init) if init else None},
        generator=torch.Generator().manual_seed(cell["seed"]), objective=Objective(training, cell["seed"]),
        amp=amp, log=log, hooks=FaultHooks(), stop=stop or StopFlag(),
        micro=MicroBatching(allowed=training["oom_micro_batches"]),
    )
    state, position = RunState(), None
    resume = load_last(out_dir / LAST, job.fingerprint, log)
    if resume is not None:
        model.load_state_dict(resume["model"])
        state = RunState(**resume["state"])
        restore_rng_states(job, resume["rng"])
        job.micro = MicroBatching(**resume["micro"])
        position, stopped_by = EpochPosition.restore(resume.get("position"), device), resume.get("stopped_by")
        state.resumed_after.append(state.epoch)
        state.resumes.append({"epoch": state.epoch, "batch": position.batches if position else None,
                              "signal": stopped_by})
        log(f"resuming from {out_dir / LAST} after epoch {state.epoch}"
            + (f" and {position.batches} batches of epoch {position.epoch}" if position else "")
            + (f" (the last job was stopped by {stopped_by})" if stopped_by else ""))
    else:  # best weights of an earlier, unrelated run
        (out_dir / BEST_SO_FAR).unlink(missing_ok=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log(f"cell {cell['id']} on {device}: {len(train)} train / {len(val)} val / {len(test)} test images")
    run_stages(job, state, resume, position, until_epoch)

    best_path = out_dir / BEST_SO_FAR
    if state.best_epoch is None:  # failed before any epoch finished: keep the starting weights
        save_checkpoint(best_path, model, cell, normalization, 0)
    else:
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=False)["model"])
    if device.type == "cuda":
        torch.cuda.empty_cache()  # after an out-of-memory error, what the failed step held
    report, test_loss = {}, None
    try:
        scores, test_loss = predict(model, test, normalize=job.normalize,
                                    batch_size=training["eval_batch_size"], amp=amp)
        report = classification_report(scores, test.labels.cpu().numpy(), class_names)
    except torch.OutOfMemoryError:
        state.status, state.oom = "oom", {"phase": "test", "epoch": None, "batch_size": training["eval_batch_size"]}
        log(f"CUDA out of memory testing at batch size {training['eval_batch_size']}")
    metrics = {
        "cell": cell["id"],
        "status": state.status,
        "diverged_epoch": state.diverged_epoch,
        "oom": state.oom,
        "test_accuracy": report.get("accuracy"),  # top-1
        "test_top5_accuracy": report.get("top5_accuracy"),
        "test_loss": test_loss,
        "test_macro_f1": report.get("macro_f1"),
        "test_auc": report.get("roc_auc"),
        "test_false_negative_rate": report.get("false_negative_rate"),
        "best_val_accuracy": state.best_val_accuracy if state.best_epoch else None,
        "epochs_run": len(state.history),
        "best_epoch": state.best_epoch,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "train_time_s": round(state.train_seconds, 3),
        "time_to_best_s": None if state.time_to_best_s is None else round(state.time_to_best_s, 3),
        "images_per_s": round(state.train_images / state.train_seconds, 1) if state.train_seconds else None,
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda" else None,
        "micro_batch_size": job.micro.size,  # training.oom_micro_batches; None: never split
        "device": str(device),
        "stages": stage_summaries(cell, state),
        "per_class": report.get("per_class"),
        "confusion_matrix": report.get("confusion_matrix"),
        "versions": versions(),
        "run": {
            "head": model.head_kind, "normalization": {"mean": list(normalization[0]), "std": list(normalization[1])},
            "aux_classifier": getattr(model.backbone, "AuxLogits", None) is not None, "bf16": amp,
            "compiled": training["compile"], "deterministic": training["deterministic"], "threads": threads,
            "resumed_after_epochs": state.resumed_after, "resumes": state.resumes,
            "micro_batches": job.micro.changes,
        },
        "config": cell,
    }
    with atomic_path(out_dir / "best.pt") as tmp:
        shutil.copyfile(best_path, tmp)
    write_history(out_dir / "history.csv", state.history)
    write_json(out_dir / "metrics.json", metrics)  # after the others: its presence means the cell is complete
    if until_epoch is None:
        (out_dir / LAST).unlink(missing_ok=True)
        best_path.unlink()  # after last.pt: a job killed in between starts afresh, never resumes without it
    log(f"done: status {state.status}, test accuracy {metrics['test_accuracy']}, best epoch {state.best_epoch}")
    return metrics
