"""Train one cell: its stages, schedules, early stopping, checkpoints, and metrics.

Every epoch ends with ``last.pt`` in the cell's folder (model, optimizer,
schedule, RNG states, run state and history), written atomically; a job
started again with the same cell config and input files resumes from it and,
on the CPU in deterministic mode, ends with the same history as a run that
was never stopped. ``last.pt`` is removed once metrics.json is written, unless the
job trained to a budget (``until_epoch``) and a later job is to continue from it.

A non-finite training loss ends the cell as ``diverged``, a CUDA out-of-memory
error as ``oom``; either way the job writes all its outputs and succeeds.
Test hook: with ``TLSWEEP_INJECT_OOM_AT_STEP=N`` in the environment, the N-th
training step of the job raises ``torch.OutOfMemoryError``.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import pickle
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from torch import nn

from workflow.atomic import atomic_path, write_json
from workflow.data import DeviceSplit, Normalizer, load_splits
from workflow.metrics import classification_report
from workflow.models import Classifier, apply_freeze, build_classifier, set_train_mode
from workflow.shards import read_class_names
from workflow.study import stage_settings

HISTORY_COLUMNS = [
    "epoch", "stage", "freeze", "lr", "train_loss", "train_accuracy",
    "val_loss", "val_accuracy", "seconds", "images_per_s",
]
TIMING_COLUMNS = ("seconds", "images_per_s")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("cosine", "plateau", "step")
OOM_HOOK = "TLSWEEP_INJECT_OOM_AT_STEP"
LAST = "last.pt"


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

    def __call__(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor):
        """(loss, logits) of a normalised batch."""
        if self.mixup > 0:
            lam = float(self.rng.beta(self.mixup, self.mixup))
            perm = torch.from_numpy(self.rng.permutation(len(labels))).to(labels.device)
            output = model(lam * x + (1 - lam) * x[perm])
            loss = lam * self.loss(output, labels) + (1 - lam) * self.loss(output, labels[perm])
        else:
            output = model(x)
            loss = self.loss(output, labels)
        return loss, output[0] if isinstance(output, tuple) else output


def train_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, objective: Objective,
               optimizer: torch.optim.Optimizer, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns the batch's summed loss and correct count as tensors (no sync)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, logits = objective(model, x, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach() * len(labels), (logits.argmax(1) == labels).sum()


def oom_injector() -> Callable[[], None]:
    """The TLSWEEP_INJECT_OOM_AT_STEP test hook: call once before each training step."""
    at = int(os.environ.get(OOM_HOOK) or 0)
    steps = itertools.count(1)

    def before_step() -> None:
        if next(steps) == at:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {OOM_HOOK}={at})")

    return before_step


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float


def train_one_epoch(model, split: DeviceSplit, normalize: Normalizer, optimizer, objective: Objective,
                    batch_size: int, freeze: str, generator: torch.Generator, amp: bool,
                    before_step: Callable[[], None] = lambda: None) -> EpochResult:
    """One pass over the training split; a diverged run shows as a non-finite loss."""
    set_train_mode(model, freeze)
    total_loss = torch.zeros((), device=split.labels.device)
    correct = torch.zeros((), dtype=torch.long, device=split.labels.device)
    seen = 0
    start = time.perf_counter()
    for images, labels in split.batches(batch_size, generator):
        if len(labels) == 1:  # batch norm cannot train on a single image
            continue
        before_step()
        x = normalize(images, generator)  # augmented as training.augment says
        batch_loss, hits = train_step(model, x, labels, objective, optimizer, amp)
        total_loss += batch_loss
        correct += hits
        seen += len(labels)
    if seen == 0:
        raise ValueError(f"the training split has {len(split)} image(s); batch norm needs at least 2")
    loss, accuracy = total_loss.item() / seen, correct.item() / seen
    return EpochResult(loss, accuracy, seen, time.perf_counter() - start)


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
    before_step: Callable[[], None]


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


def save_last(job: Job, state: RunState, optimizer, schedule: Schedule) -> None:
    """The resumable checkpoint, written atomically."""
    with atomic_path(job.out_dir / LAST) as tmp:
        torch.save({
            "fingerprint": job.fingerprint, "model": job.model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "state": asdict(state), "rng": rng_states(job),
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
    return [stage_settings(cell["training"], stage, cell["optimizer"], cell["freeze"])
            for stage in cell["training"]["stages"]]


def run_epoch(job: Job, state: RunState, stage: dict, optimizer, schedule: Schedule) -> None:
    """Train and validate one epoch, then checkpoint; a failure only sets state.status."""
    cell, training = job.cell, job.cell["training"]
    started = time.perf_counter()
    epoch = state.epoch + 1
    lr = schedule.lr()
    for group in optimizer.param_groups:
        group["lr"] = lr
    try:
        result = train_one_epoch(job.model, job.train, job.normalize, optimizer, job.objective, cell["batch_size"],
                                 stage["freeze"], job.generator, job.amp, job.before_step)
    except torch.OutOfMemoryError:
        state.status, state.oom = "oom", {"phase": "train", "epoch": epoch, "batch_size": cell["batch_size"]}
        job.log(f"epoch {epoch} ({stage['name']}): CUDA out of memory at batch size {cell['batch_size']}")
        return
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
        "epoch": epoch, "stage": stage["name"], "freeze": stage["freeze"], "lr": lr,
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
        save_checkpoint(job.out_dir / "best.pt", job.model, cell, job.normalization, epoch)
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


def run_stages(job: Job, state: RunState, resume: dict | None = None, until_epoch: int | None = None) -> None:
    """Train through the cell's stages from where `state` stands, keeping the best checkpoint;
    with `until_epoch`, stop once that many epochs (all stages together) are done."""
    stages = resolved_stages(job.cell)

    def budget_left() -> bool:
        return until_epoch is None or state.epoch < until_epoch

    while state.stage_index < len(stages) and state.status == "ok" and budget_left():
        index, stage = state.stage_index, stages[state.stage_index]
        apply_freeze(job.model, stage["freeze"])
        state.stage_trainable[stage["name"]] = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
        base_lr = job.cell["lr"] * stage["lr_factor"]
        optimizer = make_optimizer(
            stage, parameter_groups(job.model, stage["weight_decay"], stage["decay_norm_and_bias"]), base_lr)
        schedule = Schedule(stage, base_lr)
        if resume is not None and state.stage_epoch > 0:  # the job stopped inside this stage
            optimizer.load_state_dict(resume["optimizer"])
            schedule.load_state_dict(resume["schedule"])
        resume = None
        while state.stage_index == index and state.status == "ok" and budget_left():
            run_epoch(job, state, stage, optimizer, schedule)


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
               threads: int = 1, log=print, until_epoch: int | None = None) -> dict:
    """Train one cell from its resolved config (resuming last.pt if it fits); writes
    metrics.json, history.csv and best.pt.

    With `until_epoch` (a budget, all stages together) training stops after that many epochs,
    the best checkpoint so far is evaluated, and last.pt stays: a later call with a larger
    budget continues from it (successive halving's rungs, workflow/halving.py)."""
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
        amp=amp, log=log, before_step=oom_injector(),
    )
    state = RunState()
    resume = load_last(out_dir / LAST, job.fingerprint, log)
    if resume is not None:
        model.load_state_dict(resume["model"])
        state = RunState(**resume["state"])
        restore_rng_states(job, resume["rng"])
        state.resumed_after.append(state.epoch)
        log(f"resuming from {out_dir / LAST} after epoch {state.epoch}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log(f"cell {cell['id']} on {device}: {len(train)} train / {len(val)} val / {len(test)} test images")
    run_stages(job, state, resume, until_epoch)

    best_path = out_dir / "best.pt"
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
        "device": str(device),
        "stages": stage_summaries(cell, state),
        "per_class": report.get("per_class"),
        "confusion_matrix": report.get("confusion_matrix"),
        "versions": versions(),
        "run": {
            "head": model.head_kind, "normalization": {"mean": list(normalization[0]), "std": list(normalization[1])},
            "aux_classifier": getattr(model.backbone, "AuxLogits", None) is not None, "bf16": amp,
            "compiled": training["compile"], "deterministic": training["deterministic"], "threads": threads,
            "resumed_after_epochs": state.resumed_after,
        },
        "config": cell,
    }
    write_history(out_dir / "history.csv", state.history)
    write_json(out_dir / "metrics.json", metrics)  # after the others: its presence means the cell is complete
    if until_epoch is None:
        (out_dir / LAST).unlink(missing_ok=True)
    log(f"done: status {state.status}, test accuracy {metrics['test_accuracy']}, best epoch {state.best_epoch}")
    return metrics
