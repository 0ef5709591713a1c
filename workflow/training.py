"""Train one cell: its stages, plateau schedule, early stopping, best checkpoint, metrics."""

from __future__ import annotations

import csv
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from workflow.atomic import atomic_path, write_json
from workflow.data import DeviceSplit, Normalizer, load_splits
from workflow.metrics import classification_report
from workflow.models import apply_freeze, build_classifier, set_train_mode
from workflow.shards import read_class_names

HISTORY_COLUMNS = [
    "epoch", "stage", "freeze", "lr", "train_loss", "train_accuracy",
    "val_loss", "val_accuracy", "seconds", "images_per_s",
]


def pick_device() -> torch.device:
    """The GPU when there is one, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or RMSprop by name."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of ['adam', 'rmsprop', 'sgd']")


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float


def train_one_epoch(model, split: DeviceSplit, normalize: Normalizer, optimizer, batch_size: int,
                    freeze: str, generator: torch.Generator) -> EpochResult:
    """One pass over the training split; stops early (non-finite loss) if the run diverges."""
    set_train_mode(model, freeze)
    criterion = nn.CrossEntropyLoss()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for images, labels in split.batches(batch_size, generator):
        x = normalize(images, generator)  # augmented as training.augment says
        logits = model(x)
        loss = criterion(logits, labels)
        if not torch.isfinite(loss):
            return EpochResult(float("nan"), float("nan"), seen, time.perf_counter() - start)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return EpochResult(total_loss / seen, correct / seen, seen, time.perf_counter() - start)


@torch.inference_mode()
def predict(model, split: DeviceSplit, normalize: Normalizer, batch_size: int) -> tuple[np.ndarray, float]:
    """Softmax scores for a whole split, and its mean cross-entropy loss."""
    model.eval()
    scores, total_loss = [], 0.0
    for images, labels in split.batches(batch_size):
        logits = model(normalize(images)).float()
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        scores.append(logits.softmax(1).cpu().numpy())
    return np.concatenate(scores), total_loss / len(split)


@dataclass
class RunState:
    """What the training loop tracks across stages."""

    history: list[dict] = field(default_factory=list)
    best_val_accuracy: float = -1.0
    best_epoch: int | None = None
    status: str = "ok"
    diverged_epoch: int | None = None
    train_images: int = 0
    train_seconds: float = 0.0


def save_checkpoint(path: Path, model, cell: dict, normalization, epoch: int) -> None:
    """Write the model weights and what is needed to reuse them, atomically."""
    with atomic_path(path) as tmp:
        torch.save(
            {"model": model.state_dict(), "model_name": cell["model"], "cell": cell,
             "normalization": normalization, "epoch": epoch},
            tmp,
        )


def write_history(path: Path, rows: list[dict]) -> None:
    """One CSV row per epoch, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run_stages(model, cell: dict, train: DeviceSplit, val: DeviceSplit, normalize: Normalizer,
               normalization, best_path: Path, log) -> RunState:
    """Train through the cell's stages, keeping the best-validation checkpoint at `best_path`."""
    training = cell["training"]
    state = RunState()
    generator = torch.Generator().manual_seed(cell["seed"])
    epoch = 0
    for stage in training["stages"]:
        freeze = cell["freeze"] if stage["freeze"] == "cell" else stage["freeze"]
        apply_freeze(model, freeze)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(cell["optimizer"], params, cell["lr"] * stage.get("lr_factor", 1.0),
                                   training["momentum"], training["weight_decay"])
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=training["plateau"]["factor"], patience=training["plateau"]["patience"])
        stage_best, since_best = -1.0, 0
        for _ in range(stage["epochs"]):
            epoch += 1
            lr = optimizer.param_groups[0]["lr"]
            result = train_one_epoch(model, train, normalize, optimizer, cell["batch_size"], freeze, generator)
            if not math.isfinite(result.loss):
                state.status, state.diverged_epoch = "diverged", epoch
                log(f"epoch {epoch} ({stage['name']}): loss is not finite; the run diverged")
                return state
            scores, val_loss = predict(model, val, normalize, training["eval_batch_size"])
            val_accuracy = float(np.mean(scores.argmax(1) == val.labels.cpu().numpy()))
            state.train_images += result.images
            state.train_seconds += result.seconds
            state.history.append({
                "epoch": epoch, "stage": stage["name"], "freeze": freeze, "lr": lr,
                "train_loss": result.loss, "train_accuracy": result.accuracy,
                "val_loss": val_loss, "val_accuracy": val_accuracy,
                "seconds": round(result.seconds, 4), "images_per_s": round(result.images / result.seconds, 1),
            })
            log(f"epoch {epoch} ({stage['name']}, lr {lr:.2e}): train loss {result.loss:.4f} "
                f"acc {result.accuracy:.4f} | val loss {val_loss:.4f} acc {val_accuracy:.4f} "
                f"| {result.images / result.seconds:.0f} img/s")
            if val_accuracy > state.best_val_accuracy:
                state.best_val_accuracy, state.best_epoch = val_accuracy, epoch
                save_checkpoint(best_path, model, cell, normalization, epoch)
            plateau.step(val_accuracy)
            if val_accuracy > stage_best:
                stage_best, since_best = val_accuracy, 0
            else:
                since_best += 1
                if since_best >= training["early_stopping"]["patience"]:
                    log(f"early stopping in stage {stage['name']} after epoch {epoch}")
                    break
    return state


def train_cell(cell: dict, shard: str | Path, out_dir: str | Path, init: str | Path | None = None,
               threads: int = 1, log=print) -> dict:
    """Train one cell from its resolved config; writes metrics.json, history.csv and best.pt."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    torch.set_num_threads(threads)
    torch.manual_seed(cell["seed"])
    device = pick_device()
    class_names = read_class_names(shard)
    train, val, test = load_splits(shard, ("train", "val", "test"), device, cell["training"]["loader"])
    model, normalization = build_classifier(cell["model"], len(class_names), cell["weights"],
                                            cell["training"]["dropout"], init)
    model = model.to(device, memory_format=torch.channels_last)
    normalize = Normalizer(*normalization, device, cell["training"]["augment"])
    best_path = out_dir / "best.pt"
    log(f"cell {cell['id']} on {device}: {len(train)} train / {len(val)} val / {len(test)} test images")
    state = run_stages(model, cell, train, val, normalize, normalization, best_path, log)
    if state.best_epoch is None:  # diverged before any epoch finished: keep the starting weights
        save_checkpoint(best_path, model, cell, normalization, 0)
    else:
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=False)["model"])
    scores, test_loss = predict(model, test, normalize, cell["training"]["eval_batch_size"])
    report = classification_report(scores, test.labels.cpu().numpy(), class_names)
    metrics = {
        "cell": cell["id"],
        "status": state.status,
        "diverged_epoch": state.diverged_epoch,
        "test_accuracy": report["accuracy"],
        "test_top5_accuracy": report.get("top5_accuracy"),
        "test_loss": test_loss,
        "test_macro_f1": report["macro_f1"],
        "best_val_accuracy": state.best_val_accuracy if state.best_epoch else None,
        "epochs_run": len(state.history),
        "best_epoch": state.best_epoch,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "train_time_s": round(state.train_seconds, 3),
        "images_per_s": round(state.train_images / state.train_seconds, 1) if state.train_seconds else None,
        "device": str(device),
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
        "config": cell,
    }
    write_history(out_dir / "history.csv", state.history)
    write_json(out_dir / "metrics.json", metrics)  # last: its presence means the cell is complete
    log(f"done: status {state.status}, test accuracy {report['accuracy']:.4f}, best epoch {state.best_epoch}")
    return metrics
