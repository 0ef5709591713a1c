"""How a stage learns: parameter groups and the optimizer, the learning-rate schedule, early stopping,
and `Stage`, which holds the three for one stage and saves and restores them with last.pt."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("cosine", "plateau", "step")


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Trainable parameters; 1-D ones (biases, norm scales and shifts) get no weight decay unless asked."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def make_optimizer(settings: dict, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam, AdamW or RMSprop (momentum, smoothing constant `rho`) by name;
    `eps` (None: torch's default) is the epsilon of Adam, AdamW and RMSprop."""
    name = settings["optimizer"]
    eps = {} if settings["eps"] is None else {"eps": settings["eps"]}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=settings["momentum"], nesterov=settings["nesterov"])
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=settings["momentum"], alpha=settings["rho"], **eps)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


MONITORS = ("val_accuracy", "val_loss")  # what plateau and early stopping watch: higher, lower is better


class Progress:
    """Keras's test of progress on a monitored validation quantity (`val_accuracy`: higher is better,
    `val_loss`: lower): an epoch improves when it beats the best so far by more than `min_delta`, and only
    such an epoch becomes the best (a smaller gain leaves the best where it was)."""

    def __init__(self, monitor: str, min_delta: float):
        if monitor not in MONITORS:
            raise ValueError(f"unknown monitor {monitor!r}; choose one of {list(MONITORS)}")
        self.monitor, self.min_delta = monitor, min_delta
        self.higher = monitor == "val_accuracy"
        self.best = -math.inf if self.higher else math.inf  # the monitored value of the last improvement

    def improved(self, metrics: dict) -> bool:
        """Whether the epoch with these validation `metrics` improves; if so it becomes the best."""
        value = metrics[self.monitor]
        better = value - self.min_delta > self.best if self.higher else value + self.min_delta < self.best
        if better:
            self.best = value
        return better


class Schedule:
    """A stage's learning rate per epoch: optional linear warm-up, then plateau, cosine or step."""

    def __init__(self, settings: dict, base_lr: float):
        if settings["schedule"] not in SCHEDULES:
            raise ValueError(f"unknown schedule {settings['schedule']!r}; choose one of {list(SCHEDULES)}")
        self.settings = settings
        self.base_lr = base_lr
        self.epoch = 0  # epochs finished in this stage
        self.scale = 1.0  # plateau: the product of its cuts so far
        self.progress = Progress(settings["plateau"]["monitor"], settings["plateau"]["min_delta"])
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

    def step(self, metrics: dict) -> None:
        """End an epoch with these validation `metrics` ({"val_accuracy", "val_loss"}); the plateau
        schedule cuts after more than `patience` epochs without progress on its monitor (Progress)."""
        self.epoch += 1
        if self.settings["schedule"] != "plateau" or self.epoch <= self.settings["warmup_epochs"]:
            return
        if self.progress.improved(metrics):
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.settings["plateau"]["patience"]:
                self.scale *= self.settings["plateau"]["factor"]
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "scale": self.scale, "best": self.progress.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.scale, self.bad_epochs = state["epoch"], state["scale"], state["bad_epochs"]
        self.progress.best = state["best"]


class EarlyStopping:
    """A stage ends once `patience` epochs in a row brought no progress on the monitored quantity (Progress:
    by more than `min_delta`), as Keras's EarlyStopping(monitor, min_delta, patience)."""

    def __init__(self, patience: int, monitor: str, min_delta: float):
        self.patience = patience
        self.progress = Progress(monitor, min_delta)
        self.since_best = 0  # epochs since the last improvement

    @classmethod
    def of(cls, settings: dict) -> "EarlyStopping":
        """From a stage's `early_stopping` settings."""
        return cls(settings["patience"], settings["monitor"], settings["min_delta"])

    def step(self, metrics: dict) -> bool:
        """End an epoch with these validation `metrics`; whether the stage stops here."""
        if self.progress.improved(metrics):
            self.since_best = 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.progress.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.progress.best, self.since_best = state["best"], state["since_best"]


@dataclass
class Stage:
    """One stage as it trains: its resolved settings, optimizer, schedule and early stopping."""

    settings: dict  # workflow.study.grid.stage_settings
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    early_stopping: EarlyStopping

    @classmethod
    def start(cls, model: nn.Module, settings: dict, base_lr: float) -> "Stage":
        """A stage's first epoch, for the parameters of `model` that are trainable now."""
        groups = parameter_groups(model, settings["weight_decay"], settings["decay_norm_and_bias"])
        return cls(settings, make_optimizer(settings, groups, base_lr), Schedule(settings, base_lr),
                   EarlyStopping.of(settings["early_stopping"]))

    @property
    def name(self) -> str:
        return self.settings["name"]

    def set_lr(self) -> float:
        """Give the optimizer the schedule's learning rate for the next epoch, and return it."""
        lr = self.schedule.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "early_stopping": self.early_stopping.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.early_stopping.load_state_dict(state["early_stopping"])
