"""Training settings: the defaults a study starts from, how a stage overrides them, and the rules
across training keys that the schema cannot express."""

from __future__ import annotations

import copy

from workflow.study.config import ConfigError

# The batch-size paper's schedule: the new head alone, then every layer,
# learning rate / 10 when validation accuracy plateaus, early stopping.
# Keys are described in workflow/schemas/config.schema.yaml.
DEFAULT_TRAINING = {
    "stages": [
        {"name": "head", "train": "head", "epochs": 20, "lr_factor": 1.0},
        {"name": "finetune", "train": "cell", "epochs": 100, "lr_factor": 0.01},
    ],
    "head": "gap",
    "dropout": None,  # the head's own default: gap 0.5, mlp 0.2
    "momentum": 0.9,
    "rho": 0.99,  # RMSprop's smoothing constant (torch's `alpha`; Keras calls it rho, default 0.9)
    "eps": None,  # the optimizer's epsilon; None is torch's default (1e-8; Keras uses 1e-7)
    "nesterov": False,
    "weight_decay": 0.0,
    "decay_norm_and_bias": False,
    "schedule": "plateau",
    "warmup_epochs": 0,
    "plateau": {"patience": 3, "factor": 0.1},
    "step": {"every": 30, "factor": 0.1},
    "cosine": {"min_lr_factor": 0.0},
    "early_stopping": {"patience": 10},
    "augment": {"hflip": False, "crop": 0, "shift": 0.0, "zoom": 0.0, "rotation": 0.0,
                "shear": 0.0, "vflip": False, "rot90": False, "fill": "reflect"},
    "loader": {"memory_share": 0.5, "workers": 0, "buffer_chunks": 4},
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "aux_loss_weight": 0.4,
    "eval_batch_size": 256,
    "oom_micro_batches": False,
    "precision": "auto",
    "compile": False,
    "deterministic": False,
}

# Training keys a stage may set for itself (besides name, train, epochs and lr_factor).
STAGE_OVERRIDES = (
    "optimizer", "momentum", "rho", "eps", "nesterov", "weight_decay", "decay_norm_and_bias",
    "schedule", "warmup_epochs", "plateau", "step", "cosine", "early_stopping",
)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two config dicts; lists and scalars in `override` replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def stage_settings(training: dict, stage: dict, optimizer: str, train: str) -> dict:
    """A stage's effective settings: the training keys overridden by the stage's own,
    the cell's optimizer unless the stage names one, and `train: cell` resolved."""
    base = {key: training[key] for key in STAGE_OVERRIDES if key != "optimizer"}
    settings = merge({**base, "optimizer": optimizer, "lr_factor": 1.0}, stage)
    if settings["train"] == "cell":
        settings["train"] = train
    return settings


def check_training(training: dict, where: str) -> None:
    """Rules across training keys that the schema cannot express; `where` names the key in errors."""
    names = [stage["name"] for stage in training["stages"]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{where}.stages: stage names must differ; {repeated} repeat")
    if training["head"] == "own" and training["dropout"] is not None:
        raise ConfigError(f"{where}.dropout: the 'own' head keeps the model's own dropout; leave dropout unset")
    for stage in training["stages"]:
        settings = stage_settings(training, stage, "sgd", "all")
        if settings["nesterov"] and settings["momentum"] == 0:
            raise ConfigError(f"{where}: stage {stage['name']!r} asks for nesterov with momentum 0")


def cell_training(training: dict, swept: dict, own: dict) -> tuple[dict, dict]:
    """A cell's training settings and the top-level keys where they differ from the study's `training`:
    the study's, with the cell's swept values (grid.training) and its own settings (from `include`
    and `overrides`, deep-merged) on top."""
    resolved = merge(merge(training, swept), own)
    differ = {key: resolved[key] for key in resolved if resolved[key] != training[key]}
    return resolved, differ


def check_swept_keys(swept: dict) -> None:
    """The training keys a grid sweeps (grid.training) must be training keys."""
    unknown = sorted(set(swept) - set(DEFAULT_TRAINING))
    if unknown:
        raise ConfigError(f"grid.training: unknown training keys {unknown}; known: {sorted(DEFAULT_TRAINING)}")
