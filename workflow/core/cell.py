"""The cell: one training job, typed. A study builds its cells (workflow.study.grid.build_study), a job is
given its cell's id and the study file and resolves the same `Cell`, and training reads its settings as
attributes, never from a dict. The JSON form (`Cell.to_json`, `Cell.from_json`) is what metrics.json,
checkpoints and Snakemake's params trigger record.

`TrainingSettings` holds every training key of a study file with its default: the defaults are the
field defaults below and nowhere else (workflow/schemas/config.schema.yaml is checked against them).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from workflow.core.backbones import model_folder
from workflow.core.heads import canonical_head

PRETRAIN_PREFIX = "pretrain:"  # weights: pretrain:<name> starts a cell from a pretrain cell's best.pt


def _default_stages() -> list[dict]:
    # The batch-size paper's schedule: the new head alone, then every layer at lr x 0.01.
    return [{"name": "head", "train": "head", "epochs": 20, "lr_factor": 1.0},
            {"name": "finetune", "train": "cell", "epochs": 100, "lr_factor": 0.01}]


def _default(value):
    return field(default_factory=lambda: copy.deepcopy(value))


@dataclass(frozen=True)
class TrainingSettings:
    """A cell's training settings (the study file's `training:` keys, resolved for the cell). Nested
    groups (stages, plateau, augment, loader, ...) are mappings as the study file writes them."""

    stages: list = field(default_factory=_default_stages)
    head: str | dict = "gap"  # gap | mlp | own, or a head of layers (workflow.core.heads)
    dropout: float | None = None  # the head's own default: gap 0.5, mlp 0.2
    momentum: float = 0.9
    rho: float = 0.99  # RMSprop's smoothing constant (torch's `alpha`; Keras calls it rho, default 0.9)
    eps: float | None = None  # the optimizer's epsilon; None is torch's default (1e-8; Keras uses 1e-7)
    nesterov: bool = False
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = False
    schedule: str = "plateau"
    warmup_epochs: int = 0
    plateau: dict = _default({"patience": 3, "factor": 0.1})
    step: dict = _default({"every": 30, "factor": 0.1})
    cosine: dict = _default({"min_lr_factor": 0.0})
    early_stopping: dict = _default({"patience": 10})
    augment: dict = _default({"hflip": False, "crop": 0, "shift": 0.0, "zoom": 0.0, "rotation": 0.0,
                              "shear": 0.0, "vflip": False, "rot90": False, "fill": "reflect"})
    loader: dict = _default({"memory_share": 0.5, "workers": 0, "buffer_chunks": 4})
    label_smoothing: float = 0.0
    mixup: float = 0.0
    aux_loss_weight: float = 0.4
    eval_batch_size: int = 256
    oom_micro_batches: bool = False
    precision: str = "auto"
    compile: bool = False
    deterministic: bool = False

    def __post_init__(self):
        object.__setattr__(self, "head", canonical_head(self.head))  # a head of layers written out in full

    @classmethod
    def from_mapping(cls, data: dict) -> TrainingSettings:
        """Settings from a complete mapping of training keys (a resolved study entry, or JSON)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training keys {unknown}; known: {sorted(names)}")
        return cls(**copy.deepcopy(data))

    def as_mapping(self) -> dict:
        """Every key and its value, as a study file writes them."""
        return asdict(self)

    def stage(self, stage: dict, optimizer: str, train: str) -> dict:
        """A stage's effective settings: these settings overridden by the stage's own (STAGE_OVERRIDES),
        the cell's optimizer unless the stage names one, `train: cell` resolved to the cell's `train`, and
        the unfilled keys of plateau and early stopping (UNFILLED_STAGE_KEYS) at their values where unset."""
        base = {key: getattr(self, key) for key in STAGE_OVERRIDES if key != "optimizer"}
        settings = merge({**base, "optimizer": optimizer, "lr_factor": 1.0}, stage)
        for group, unfilled in UNFILLED_STAGE_KEYS.items():
            settings[group] = {**unfilled, **settings[group]}
        if settings["train"] == "cell":
            settings["train"] = train
        return settings

    @property
    def epochs(self) -> int:
        """Epochs of every stage together."""
        return sum(stage["epochs"] for stage in self.stages)


DEFAULT_TRAINING = TrainingSettings().as_mapping()  # the defaults as a mapping, for merging study files

# Keys of a stage's `plateau` and `early_stopping` that are not filled in when absent, with the value they then
# take (TrainingSettings.stage fills them in), so that the JSON of cells that leave them out stays as it was.
UNFILLED_STAGE_KEYS = {"plateau": {"monitor": "val_accuracy", "min_delta": 0.0},
                       "early_stopping": {"monitor": "val_accuracy", "min_delta": 0.0}}

# Training keys a stage may set for itself (besides name, train, epochs and lr_factor).
STAGE_OVERRIDES = (
    "optimizer", "momentum", "rho", "eps", "nesterov", "weight_decay", "decay_norm_and_bias",
    "schedule", "warmup_epochs", "plateau", "step", "cosine", "early_stopping",
)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two mappings of settings; lists and scalars in `override` replace, and so does a head
    (a head of layers is one value, never merged into another)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "head":
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class Cell:
    """One training job: dataset x model x resolution x batch size x learning rate x optimizer x what
    trains x seed x starting weights, with its resolved training settings."""

    dataset: str
    model: str
    resolution: int
    batch_size: int
    lr: float
    optimizer: str
    train: str
    seed: int
    weights: str
    training: TrainingSettings = field(compare=False)
    upstream: str | None = None  # id of the pretrain cell whose best checkpoint starts this one
    params: dict = field(default_factory=dict)  # swept training keys that differ from the study's
    bracket: int | None = None  # its Hyperband bracket (search.brackets > 1): it starts at that rung

    @property
    def id(self) -> str:
        return cell_id(self)

    def stages(self) -> list[dict]:
        """Each stage with every setting resolved (TrainingSettings.stage)."""
        return [self.training.stage(stage, self.optimizer, self.train) for stage in self.training.stages]

    def to_json(self) -> str:
        """The cell as canonical JSON, its id included (a bracket only where there are brackets)."""
        data = {"id": self.id, **asdict(self)}
        if self.bracket is None:
            del data["bracket"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> Cell:
        """The cell `to_json` wrote (as text, or already parsed); its id must be the one it computes."""
        data = json.loads(text) if isinstance(text, str) else dict(text)
        written_id = data.pop("id", None)
        cell = cls(**{**data, "training": TrainingSettings.from_mapping(data["training"])})
        if written_id is not None and written_id != cell.id:
            raise ValueError(f"cell JSON says id {written_id!r} but its values give {cell.id!r}")
        return cell


def format_lr(lr: float) -> str:
    """Learning rate in short scientific notation: 0.0001 -> '1e-4', 0.0003 -> '3e-4'."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def weights_tag(weights: str) -> str:
    """Short id suffix for a cell's starting weights ('' for the default, imagenet)."""
    if weights == "imagenet":
        return ""
    if weights == "none":
        return "-wnone"
    if weights.startswith(PRETRAIN_PREFIX):
        return "-w" + weights[len(PRETRAIN_PREFIX):]
    digest = hashlib.sha1(weights.encode()).hexdigest()[:6]
    return f"-w{Path(weights).stem}-{digest}"


def param_tag(value) -> str:
    """A swept training value as it appears in a cell id (a mapping or list as a short digest)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    return str(value).replace(":", "").replace("/", "_")


def cell_id(cell: Cell) -> str:
    """Stable, readable id of a cell, also its folder's name; adding values to an axis never changes it:
    ``digits-5to9/resnet18/r32/bs16-lr1e-3-adam-all-s0-wdigits-0to4``."""
    params = "".join(f"-{key}{param_tag(value)}" for key, value in sorted(cell.params.items()))
    run = (
        f"bs{cell.batch_size}-lr{format_lr(cell.lr)}-{cell.optimizer}"
        f"-{cell.train.replace(':', '')}-s{cell.seed}{weights_tag(cell.weights)}{params}"
    )
    return f"{cell.dataset}/{model_folder(cell.model)}/r{cell.resolution}/{run}"
