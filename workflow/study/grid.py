"""A study's grid of training cells, built from its validated config.

A *cell* is one training job: dataset x model x resolution x batch size x
learning rate x optimizer x what trains x seed x starting weights. Its id is also
its folder's name (workflow.core.paths), readable and stable:
``digits-5to9/resnet18/r32/bs16-lr1e-3-adam-all-s0-wdigits-0to4``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from workflow.data.datasets import DatasetConfigError, configured_classes, resolve_datasets, source_raw_dir
from workflow.core import paths
from workflow.study.config import ConfigError
from workflow.study.sampling import SEARCH_GROUP, SEARCH_INDEX, RandomSearch, apply_draws, sampled_grid
from workflow.study.halving import Halving, bracket_sequence, build_search
from workflow.study.tpe_space import sampled_search
from workflow.core.backbones import model_error, train_error
from workflow.core.heads import output_classes_error
from workflow.core.cell import DEFAULT_TRAINING, PRETRAIN_PREFIX, Cell, TrainingSettings, merge
from workflow.study.settings import cell_training, check_swept_keys, check_training
from workflow.study.model_ranking import Ranking

# The order in which the grid expands; `overrides` may only condition on earlier axes.
AXES = ("dataset", "model", "resolution", "optimizer", "batch_size", "lr", "train", "weights", "seed")
MAX_CELLS = 10_000  # the study key max_cells' default: the most cells a grid's axes may make
# A cell id as a regular expression: dataset/model/r<resolution>/<run>.
CELL_ID = r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/r\d+/[A-Za-z0-9_.-]+"
LOCATIONS = ("path", "root")  # dataset keys that name a file or folder of the user's


def data_definition(spec: dict, raw_root, data_dir) -> dict:
    """What a dataset's prepared files are made from, and so what finds them (`paths.data_key`): its resolved
    entry and the folder its source files are read from, files and folders as the data folder sees them
    (`paths.seen_from_data`); never its name."""
    folder = source_raw_dir(spec, raw_root)
    return {"spec": {key: paths.seen_from_data(value, data_dir) if key in LOCATIONS and value else value
                     for key, value in spec.items()},
            "raw_dir": paths.seen_from_data(folder, data_dir) if folder else None}


def definition_here(definition: dict, data_dir) -> dict:
    """A definition (as a plan records it too) with its files and folders usable from the working folder."""
    spec = definition["spec"]
    return {"spec": {key: paths.from_data(value, data_dir) if key in LOCATIONS and value else value
                     for key, value in spec.items()},
            "raw_dir": paths.from_data(definition["raw_dir"], data_dir) if definition["raw_dir"] else None}


@dataclass
class Study:
    """A validated study: its datasets and every cell to train, upstream cells included."""

    name: str
    results_dir: Path
    data_dir: Path
    datasets: dict
    definitions: dict  # dataset -> what its prepared files are made from (`data_definition`)
    grid_cells: list[Cell]
    cells: dict[str, Cell]  # every cell by id: grid cells and their upstream cells
    halving: Halving | None = None  # `search: halving`; None for a plain grid search
    sampling: RandomSearch | None = None  # `search: random` or `tpe`: what the cells' drawn values come from
    positive_classes: dict = field(default_factory=dict)  # `positive_class`: dataset -> its positive class
    search_groups: dict = field(default_factory=dict)  # a drawn grid cell's id -> its combination's group_key
    search_rounds: dict = field(default_factory=dict)  # a TPE search's grid cell id -> the round that drew it
    # `rank` (workflow.sweep.model_choice.ranked_study): the candidate models scored from their features, every
    # candidate's grid cells, and whether rank-then-tune's grid_cells are the chosen models' (else every candidate's)
    ranking: Ranking | None = None
    candidate_cells: list[Cell] = field(default_factory=list)
    models_chosen: bool = False

    @property
    def out(self) -> Path:
        return Path(paths.study_folder(self.results_dir, self.name))

    @cached_property
    def grid_ids(self) -> frozenset[str]:
        return frozenset(cell.id for cell in self.grid_cells)

    def is_pretrain(self, cell_id: str) -> bool:
        """Whether a cell of the study is a pretrain cell (one whose checkpoint starts grid cells)."""
        return cell_id not in self.grid_ids

    def cell(self, cell_id: str, pretrain: bool | None = None) -> Cell:
        """The cell of an id (a pretrain cell or a grid cell, if `pretrain` says which), or an error naming it."""
        cell = self.cells.get(cell_id)
        if cell is None or pretrain not in (None, self.is_pretrain(cell_id)):
            kind = {None: "a", False: "a grid", True: "a pretrain"}[pretrain]
            raise ValueError(f"{cell_id!r} is not {kind} cell of study {self.name!r}")
        return cell

    def dataset(self, name: str) -> dict:
        """The resolved config entry of a dataset, or an error naming it."""
        if name not in self.datasets:
            raise ValueError(f"{name!r} is not a dataset of study {self.name!r}")
        return self.datasets[name]

    @cached_property
    def data_keys(self) -> dict[str, str]:
        """Each dataset's data key: the folder name of its prepared data, its source and a digest of its definition."""
        return {name: paths.data_key(spec["source"], self.definitions[name]) for name, spec in self.datasets.items()}

    def data_key(self, name: str) -> str:
        self.dataset(name)  # an error naming it
        return self.data_keys[name]

    def prepared_as(self, key: str) -> str:
        """The first dataset (by name) whose prepared data is `key`, or an error naming the key."""
        names = sorted(name for name, own in self.data_keys.items() if own == key)
        if not names:
            raise ValueError(f"no dataset of study {self.name!r} is prepared as {key!r} (its datasets: "
                             + ", ".join(f"{name} as {own}" for name, own in sorted(self.data_keys.items())) + ")")
        return names[0]

    def definition_here(self, name: str) -> dict:
        """A dataset's definition with its files and folders usable from the working folder (what its plan reads)."""
        return definition_here(self.definitions[name], self.data_dir)

    def plan_path(self, dataset: str) -> Path:
        """A dataset's plan."""
        return Path(paths.plan_file(self.data_dir, self.data_key(dataset)))

    def cell_dir(self, cell_id: str) -> Path:
        return Path(paths.cell_folder(self.out, paths.UPSTREAM if self.is_pretrain(cell_id) else paths.GRID, cell_id))

    def rung_dir(self, cell_id: str, rung: int) -> Path:
        """Where a grid cell's rung (successive halving) writes its outputs."""
        return Path(paths.rung_folder(self.cell_dir(cell_id), rung))

    def halving_round(self, cell_id: str) -> int | None:
        """The TPE round whose ladder a halved grid cell climbs (each round is halved on its own), or None
        outside a TPE search."""
        return self.search_rounds.get(cell_id) if self.halving else None

    def rankings_dir(self, round_index: int | None = None) -> Path:
        """The rankings of the study's ladder (successive halving), or of one TPE round's."""
        if round_index is None:
            return Path(paths.rankings_folder(self.out))
        return Path(paths.round_rankings_folder(self.out, round_index))

    def ranking_path(self, rung: int, round_index: int | None = None) -> Path:
        """The ranking of the cells that reached a rung (successive halving), of one TPE round if given."""
        return Path(paths.ranking_file(self.rankings_dir(round_index), rung))

    def manifest_path(self, dataset: str, resolution: int) -> Path:
        """The manifest of a dataset at a resolution: what training reads."""
        return Path(paths.manifest_file(self.data_dir, self.data_key(dataset), resolution))

    def train_inputs(self, cell: Cell, imagenet: dict) -> dict[str, str]:
        """What a cell's training reads: its manifest, and its starting weights: the cached ImageNet
        file (`imagenet`: {model: (file, URL)}), its upstream cell's best checkpoint or a weights file."""
        inputs = {"manifest": str(self.manifest_path(cell.dataset, cell.resolution))}
        if cell.weights == "imagenet":
            inputs["weights"] = imagenet[cell.model][0]
        elif cell.upstream:
            inputs["init"] = str(self.cell_dir(cell.upstream) / paths.BEST_PT)
        elif cell.weights != "none":
            inputs["init"] = cell.weights
        return inputs


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
    check_training(training, f"pretrain.{name}.training")
    cell = Cell(
        dataset=spec["dataset"], model=model, resolution=resolution,
        batch_size=spec["batch_size"], lr=float(spec["lr"]), optimizer=spec["optimizer"],
        train=spec["train"], seed=spec["seed"], weights=spec["weights"],
        training=TrainingSettings.from_mapping(training),
    )
    _check_cell(cell, f"pretrain.{name}", config["datasets"])
    return cell


def _check_cell(cell: Cell, where: str, datasets: dict) -> None:
    """Rules across a cell's axes and what each of its stages trains, with the cell's id in the message."""
    problem = model_error(cell.model, cell.resolution, cell.weights)
    if problem:
        raise ConfigError(f"{where}: {problem} (cell {cell.id})")
    problem = output_classes_error(cell.training.head, configured_classes(datasets[cell.dataset]))
    if problem:
        raise ConfigError(f"training.head.output: dataset {cell.dataset!r}: {problem} (cell {cell.id})")
    for i, stage in enumerate(cell.training.stages):
        train = cell.train if stage["train"] == "cell" else stage["train"]
        problem = train_error(cell.model, train, cell.training.head, cell.resolution)
        if problem:
            key = f"{where}.train" if stage["train"] == "cell" else f"training.stages[{i}].train"
            raise ConfigError(f"{key}: {train!r}: {problem} (cell {cell.id})")


def _matches(values: dict, pattern: dict) -> bool:
    return all(values.get(axis) == value for axis, value in pattern.items())


def _check_overrides(overrides: list[dict]) -> None:
    for i, rule in enumerate(overrides):
        axes = [axis for axis in rule["set"] if axis != "training"]  # training settings come after every axis
        if not axes:
            continue
        first_set = min(AXES.index(axis) for axis in axes)
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


def own_training(combo: dict, overrides: list[dict]) -> dict:
    """The training settings that `overrides` set for a cell, in their order (later ones win)."""
    own: dict = {}
    for rule in overrides:
        if "training" in rule["set"] and _matches(combo, rule["when"]):
            own = merge(own, rule["set"]["training"])
    return own


def expand_grid(grid: dict) -> list[dict]:
    """The grid's cells as axis-value dicts: product with overrides, minus exclude, plus include."""
    overrides = grid.get("overrides", [])
    _check_overrides(overrides)
    combos = [c for c in expand_axes(grid, overrides) if not any(_matches(c, e) for e in grid.get("exclude", []))]
    combos = [{**combo, "training": own_training(combo, overrides)} for combo in combos]
    for entry in grid.get("include", []):
        axes = {axis: [value] for axis, value in entry.items() if axis != "training"}
        combos += [{**combo, "training": merge(own_training(combo, overrides), entry.get("training", {}))}
                   for combo in expand_axes({**grid, **axes}, overrides)]
    swept = grid.get("training", {})
    keys = sorted(swept)
    return [
        {**combo, "params": dict(zip(keys, values))}
        for combo in combos
        for values in itertools.product(*(swept[key] for key in keys))
    ]


def check_grid_size(grid: dict, sampling: RandomSearch | None, limit: int) -> None:
    """Refuse a grid whose axes make more than `limit` cells, before any is built: the product of the axes'
    lengths (`grid` as sampled_grid gives it) and of a search's draws per combination."""
    sizes = {axis: len(grid[axis]) for axis in AXES}
    sizes.update((f"training.{key}", len(values)) for key, values in sorted(grid.get("training", {}).items()))
    if sampling is not None:
        sizes["search.n"] = sampling.n
    count = math.prod(sizes.values())
    if count > limit:
        axes = " x ".join(f"{axis} {size}" for axis, size in sizes.items() if size > 1)
        raise ConfigError(f"grid: {count:,} cells, more than max_cells ({limit:,}): {axes}; make the grid "
                          f"smaller, or set max_cells to its size if you mean it")


def build_study(config: dict, rounds: dict[int, dict] | None = None) -> Study:
    """Expand a schema-validated config into its cells, checking cross references. A TPE search's cells
    are its first round's and those of the later `rounds` chosen so far ({round: its round file's content},
    as workflow.sweep.decisions.SearchDecisions reads them). Reads no file."""
    try:
        datasets = resolve_datasets(config["datasets"])
    except DatasetConfigError as error:
        raise ConfigError(str(error)) from None
    grid = config["grid"]
    check_swept_keys(grid.get("training", {}))
    training = merge(DEFAULT_TRAINING, config.get("training", {}))
    check_training(training, "training")
    cells: dict[str, Cell] = {}
    grid_cells = []
    search_groups, search_rounds, draw_index = {}, {}, {}
    sampling = sampled_search(config, DEFAULT_TRAINING, rounds or {})
    check_grid_size(sampled_grid(grid, sampling), sampling, config.get("max_cells", MAX_CELLS))
    for values in apply_draws(expand_grid(sampled_grid(grid, sampling)), sampling):
        group, index = values.pop(SEARCH_GROUP, None), values.pop(SEARCH_INDEX, None)
        _check_dataset(values["dataset"], datasets, "grid.dataset")
        resolved, params = cell_training(training, values.pop("params"), values.pop("training"))
        cell = Cell(**{**values, "lr": float(values["lr"])}, training=TrainingSettings.from_mapping(resolved),
                    params=params)
        if params:
            check_training(resolved, f"cell {cell.id}: training")
        _check_cell(cell, "grid", datasets)
        if values["weights"].startswith(PRETRAIN_PREFIX):
            up = _upstream_cell(config, values["weights"][len(PRETRAIN_PREFIX):], values["model"],
                                values["resolution"], "grid.weights")
            cells[up.id] = up
            cell = replace(cell, upstream=up.id)
        if cell.id not in cells:
            grid_cells.append(cell)
            draw_index[cell.id] = index
        if group is not None:
            search_groups[cell.id] = group
        round_index = None if sampling is None else sampling.round_of(index)
        if round_index is not None:
            search_rounds.setdefault(cell.id, round_index)  # a repeated configuration: its first round
        cells[cell.id] = cell
    if not grid_cells:
        raise ConfigError("grid.exclude removes every cell of the grid (and grid.include adds none): nothing to train")
    halving = build_search(config.get("search"), grid_cells, AXES)
    if halving is not None and halving.brackets > 1:
        grid_cells = in_brackets(grid_cells, draw_index, halving)
        cells.update((cell.id, cell) for cell in grid_cells)
    data_dir = Path(config.get("data_dir", "results/data"))
    return Study(
        name=config["study"], results_dir=Path(config.get("results_dir", "results")), data_dir=data_dir,
        datasets=datasets,
        definitions={name: data_definition(spec, config.get("raw_dir", "results/raw"), data_dir)
                     for name, spec in datasets.items()},
        grid_cells=grid_cells,
        cells=cells,
        halving=halving,
        sampling=sampling,
        positive_classes=positive_classes(config, datasets),
        search_groups=search_groups,
        search_rounds=search_rounds,
    )


def in_brackets(grid_cells: list[Cell], draw_index: dict[str, int], halving: Halving) -> list[Cell]:
    """The drawn cells, each in the Hyperband bracket its draw's index falls in (search.bracket_sequence)."""
    sequence = bracket_sequence(halving.bracket_weights(), max(draw_index.values()) + 1)
    return [replace(cell, bracket=sequence[draw_index[cell.id]]) for cell in grid_cells]


def positive_classes(config: dict, datasets: dict) -> dict:
    """`positive_class`: the positive class of two-class datasets, by dataset; names must be datasets."""
    chosen = config.get("positive_class") or {}
    for name in chosen:
        _check_dataset(name, datasets, f"positive_class.{name}")
    return dict(chosen)
