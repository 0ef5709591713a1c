"""A study's grid of training cells, built from its validated config.

A *cell* is one training job: dataset x model x resolution x batch size x
learning rate x optimizer x what trains x seed x starting weights. Its id is also
its folder under ``results/<study>/cells/``, readable and stable:
``digits-5to9/resnet18/r32/bs16-lr1e-3-adam-all-s0-wdigits-0to4``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from workflow.data.datasets import DatasetConfigError, resolve_datasets
from workflow.study.config import ConfigError
from workflow.train.backbones import resolution_error

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
    "nesterov": False,
    "weight_decay": 0.0,
    "decay_norm_and_bias": False,
    "schedule": "plateau",
    "warmup_epochs": 0,
    "plateau": {"patience": 3, "factor": 0.1},
    "step": {"every": 30, "factor": 0.1},
    "cosine": {"min_lr_factor": 0.0},
    "early_stopping": {"patience": 10},
    "augment": {"hflip": False, "crop": 0, "shift": 0.0, "zoom": 0.0, "rotation": 0.0, "fill": "reflect"},
    "loader": {"memory_share": 0.5, "workers": 0, "buffer_chunks": 4},
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "aux_loss_weight": 0.4,
    "eval_batch_size": 256,
    "oom_micro_batches": False,
    "bf16": True,
    "compile": False,
    "deterministic": False,
}

# Training keys a stage may set for itself (besides name, train, epochs and lr_factor).
STAGE_OVERRIDES = (
    "optimizer", "momentum", "nesterov", "weight_decay", "decay_norm_and_bias",
    "schedule", "warmup_epochs", "plateau", "step", "cosine", "early_stopping",
)


def stage_settings(training: dict, stage: dict, optimizer: str, train: str) -> dict:
    """A stage's effective settings: the training keys overridden by the stage's own,
    the cell's optimizer unless the stage names one, and `train: cell` resolved."""
    base = {key: training[key] for key in STAGE_OVERRIDES if key != "optimizer"}
    settings = merge({**base, "optimizer": optimizer, "lr_factor": 1.0}, stage)
    if settings["train"] == "cell":
        settings["train"] = train
    return settings


PRETRAIN_PREFIX = "pretrain:"

# The order in which the grid expands; `overrides` may only condition on earlier axes.
AXES = ("dataset", "model", "resolution", "optimizer", "batch_size", "lr", "train", "weights", "seed")


# Successive halving's settings that a study may leave out (see `search` in the schema).
DEFAULT_HALVING = {"keep": 1 / 3, "metric": "val_accuracy", "group_by": ["dataset", "model"]}
# Ranking metrics: a history.csv column and whether its best value so far is the largest or the smallest.
HALVING_METRICS = {"val_accuracy": max, "val_loss": min}


@dataclass(frozen=True)
class Halving:
    """Successive halving: every grid cell trains to the first rung's budget (epochs, all stages
    together); within each group the best `keep` share by `metric` goes on to the next rung,
    continuing from its own checkpoint, and so on up the ladder."""

    rungs: tuple[int, ...]  # budgets in epochs, strictly increasing
    keep: float  # share of each group's cells that goes on after a rung
    metric: str  # a key of HALVING_METRICS
    group_by: tuple[str, ...]  # axes whose values make a group; cells compete only within their group

    @property
    def last(self) -> int:
        """Index of the last rung: cells that reach it are the finalists."""
        return len(self.rungs) - 1

    def survivors(self, cells: int) -> int:
        """How many of a group's `cells` go on: ceil(keep x cells), at least one."""
        return max(1, math.ceil(self.keep * cells - 1e-9)) if cells else 0

    def group(self, cell: dict) -> dict:
        """A cell's (as a dict) values on the group axes."""
        return {axis: cell[axis] for axis in self.group_by}

    def to_dict(self) -> dict:
        return {"rungs": list(self.rungs), "keep": self.keep, "metric": self.metric, "group_by": list(self.group_by)}

    @classmethod
    def from_dict(cls, data: dict) -> "Halving":
        return cls(rungs=tuple(data["rungs"]), keep=data["keep"], metric=data["metric"],
                   group_by=tuple(data["group_by"]))


@dataclass(frozen=True)
class Cell:
    """Everything one training job needs to know, resolved from the config."""

    dataset: str
    model: str
    resolution: int
    batch_size: int
    lr: float
    optimizer: str
    train: str
    seed: int
    weights: str
    training: dict = field(compare=False)
    upstream: str | None = None  # id of the cell whose checkpoint seeds this one
    params: dict = field(default_factory=dict)  # swept training keys that differ from the study's

    @property
    def id(self) -> str:
        return cell_id(self)

    def to_dict(self) -> dict:
        """The cell as plain JSON-able data, id included."""
        return {"id": self.id, **asdict(self)}


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


def format_value(value) -> str:
    """A swept training value as it appears in a cell id."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace(":", "").replace("/", "_")


def cell_id(cell: Cell) -> str:
    """Stable, readable id of a cell; adding values to an axis never changes it."""
    params = "".join(f"-{key}{format_value(value)}" for key, value in sorted(cell.params.items()))
    run = (
        f"bs{cell.batch_size}-lr{format_lr(cell.lr)}-{cell.optimizer}"
        f"-{cell.train.replace(':', '')}-s{cell.seed}{weights_tag(cell.weights)}{params}"
    )
    return f"{cell.dataset}/{cell.model}/r{cell.resolution}/{run}"


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two config dicts; lists and scalars in `override` replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass
class Study:
    """A validated study: its datasets and every cell to train, upstream cells included."""

    name: str
    results_dir: Path
    data_dir: Path
    datasets: dict
    grid_cells: list[Cell]
    cells: dict[str, Cell]  # every cell by id: grid cells and their upstream cells
    halving: Halving | None = None  # `search: halving`; None for a plain grid search

    @property
    def out(self) -> Path:
        return self.results_dir / self.name

    def cell_dir(self, cell_id: str) -> Path:
        return self.out / "cells" / cell_id

    def rung_dir(self, cell_id: str, rung: int) -> Path:
        """Where a grid cell's rung (successive halving) writes its outputs."""
        return self.cell_dir(cell_id) / f"rung-{rung}"

    def ranking_path(self, rung: int) -> Path:
        """The ranking of the cells that reached a rung (successive halving)."""
        return self.out / "halving" / f"rung-{rung}.json"

    def prepared_path(self, dataset: str, resolution: int) -> Path:
        """The manifest of a dataset prepared at a resolution: what training reads."""
        return self.data_dir / dataset / f"r{resolution}.json"


def _check_dataset(name: str, datasets: dict, where: str) -> None:
    if name not in datasets:
        raise ConfigError(
            f"{where}: unknown dataset {name!r}; the study defines {sorted(datasets)}"
        )


def _upstream_cell(config: dict, name: str, model: str, resolution: int, where: str) -> Cell:
    pretrain = config.get("pretrain", {})
    if name not in pretrain:
        raise ConfigError(
            f"{where}: unknown pretrain cell {name!r}; the study defines {sorted(pretrain)}"
        )
    spec = pretrain[name]
    _check_dataset(spec["dataset"], config["datasets"], f"pretrain.{name}.dataset")
    if spec["weights"].startswith(PRETRAIN_PREFIX):
        raise ConfigError(f"pretrain.{name}.weights: chains of pretrain cells are not supported")
    training = merge(merge(DEFAULT_TRAINING, config.get("training", {})), spec.get("training", {}))
    _check_training(training, f"pretrain.{name}.training")
    cell = Cell(
        dataset=spec["dataset"], model=model, resolution=resolution,
        batch_size=spec["batch_size"], lr=float(spec["lr"]), optimizer=spec["optimizer"],
        train=spec["train"], seed=spec["seed"], weights=spec["weights"], training=training,
    )
    _check_cell(cell, f"pretrain.{name}")
    return cell


def _check_training(training: dict, where: str) -> None:
    """Rules across training keys that the schema cannot express."""
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


def _check_cell(cell: Cell, where: str) -> None:
    """Rules across a cell's axes, with the cell's id in the message."""
    problem = resolution_error(cell.model, cell.resolution)
    if problem:
        raise ConfigError(f"{where}: {problem} (cell {cell.id})")


def _matches(values: dict, pattern: dict) -> bool:
    return all(values.get(axis) == value for axis, value in pattern.items())


def _check_overrides(overrides: list[dict]) -> None:
    for i, rule in enumerate(overrides):
        first_set = min(AXES.index(axis) for axis in rule["set"])
        late = [axis for axis in rule["when"] if AXES.index(axis) >= first_set]
        if late:
            raise ConfigError(
                f"grid.overrides[{i}].when: {late} do not come before {sorted(rule['set'])} "
                f"in the expansion order {list(AXES)}"
            )


def expand_axes(axis_values: dict, overrides: list[dict]) -> list[dict]:
    """Every combination of axis values, in AXES order, applying `overrides` as it goes."""
    combos: list[dict] = [{}]
    for axis in AXES:
        expanded = []
        for combo in combos:
            values = axis_values[axis]
            for rule in overrides:
                if axis in rule["set"] and _matches(combo, rule["when"]):
                    values = rule["set"][axis]
            expanded += [{**combo, axis: value} for value in values]
        combos = expanded
    return combos


def expand_grid(grid: dict) -> list[dict]:
    """The grid's cells as axis-value dicts: product with overrides, minus exclude, plus include."""
    overrides = grid.get("overrides", [])
    _check_overrides(overrides)
    combos = [c for c in expand_axes(grid, overrides) if not any(_matches(c, e) for e in grid.get("exclude", []))]
    for entry in grid.get("include", []):
        combos += expand_axes({**grid, **{axis: [value] for axis, value in entry.items()}}, overrides)
    swept = grid.get("training", {})
    keys = sorted(swept)
    return [
        {**combo, "params": dict(zip(keys, values))}
        for combo in combos
        for values in itertools.product(*(swept[key] for key in keys))
    ]


def _check_swept_keys(swept: dict) -> None:
    unknown = sorted(set(swept) - set(DEFAULT_TRAINING))
    if unknown:
        raise ConfigError(f"grid.training: unknown training keys {unknown}; known: {sorted(DEFAULT_TRAINING)}")


def total_epochs(training: dict) -> int:
    """A cell's epochs at most, all stages together: what a halving budget counts."""
    return sum(stage["epochs"] for stage in training["stages"])


def default_rungs(longest: int) -> list[int]:
    """Three rungs a factor 3 apart that end at the longest training: 20 epochs -> [3, 7, 20]."""
    return sorted({max(1, math.ceil(longest / 9)), max(1, math.ceil(longest / 3)), longest})


def build_search(search, grid_cells: list[Cell]) -> Halving | None:
    """The study's search: None for a grid search, else its successive-halving settings, checked."""
    if search is None:
        return None
    if isinstance(search, str):
        search = {"method": search}
    if search.get("method", "grid") == "grid":
        extra = sorted(set(search) - {"method"})
        if extra:
            raise ConfigError(f"search: {extra} only apply to method 'halving'")
        return None
    settings = {**DEFAULT_HALVING, **search}
    longest = max(total_epochs(cell.training) for cell in grid_cells)
    rungs = list(settings.get("rungs") or default_rungs(longest))
    if len(rungs) < 2:
        raise ConfigError(f"search.rungs: halving needs at least two rungs, got {rungs}")
    if any(not isinstance(rung, int) or isinstance(rung, bool) or rung < 1 for rung in rungs):
        raise ConfigError(f"search.rungs: budgets are whole epochs of at least 1, got {rungs}")
    if any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise ConfigError(f"search.rungs: budgets must increase strictly, got {rungs}")
    if rungs[-1] > longest:
        raise ConfigError(
            f"search.rungs: the last rung ({rungs[-1]} epochs) is more than any grid cell trains "
            f"({longest} epochs, all stages together); make it at most {longest}"
        )
    if not 0 < settings["keep"] < 1:
        raise ConfigError(f"search.keep: the share that goes on must be between 0 and 1, got {settings['keep']}")
    if settings["metric"] not in HALVING_METRICS:
        raise ConfigError(f"search.metric: unknown metric {settings['metric']!r}; choose one of {list(HALVING_METRICS)}")
    unknown = sorted(set(settings["group_by"]) - set(AXES))
    if unknown:
        raise ConfigError(f"search.group_by: unknown axes {unknown}; choose among {list(AXES)}")
    return Halving(rungs=tuple(rungs), keep=float(settings["keep"]), metric=settings["metric"],
                   group_by=tuple(axis for axis in AXES if axis in settings["group_by"]))


def build_study(config: dict) -> Study:
    """Expand a schema-validated config into its cells, checking cross references."""
    try:
        datasets = resolve_datasets(config["datasets"])
    except DatasetConfigError as error:
        raise ConfigError(str(error)) from None
    grid = config["grid"]
    _check_swept_keys(grid.get("training", {}))
    training = merge(DEFAULT_TRAINING, config.get("training", {}))
    _check_training(training, "training")
    cells: dict[str, Cell] = {}
    grid_cells = []
    for values in expand_grid(grid):
        _check_dataset(values["dataset"], datasets, "grid.dataset")
        params = {key: value for key, value in values.pop("params").items() if value != training[key]}
        cell = Cell(**{**values, "lr": float(values["lr"])}, training=merge(training, params), params=params)
        if params:
            _check_training(cell.training, f"cell {cell.id}: training")
        _check_cell(cell, "grid")
        if values["weights"].startswith(PRETRAIN_PREFIX):
            up = _upstream_cell(
                config, values["weights"][len(PRETRAIN_PREFIX):],
                values["model"], values["resolution"], "grid.weights",
            )
            cells[up.id] = up
            cell = replace(cell, upstream=up.id)
        if cell.id not in cells:
            grid_cells.append(cell)
        cells[cell.id] = cell
    return Study(
        name=config["study"],
        results_dir=Path(config.get("results_dir", "results")),
        data_dir=Path(config.get("data_dir", "results/data")),
        datasets=datasets,
        grid_cells=grid_cells,
        cells=cells,
        halving=build_search(config.get("search"), grid_cells),
    )
