"""A TPE search's settings (``search: {method: tpe}``) and the configurations its rounds chose so far.

The first round is the random search's first `round` draws (TPE starts from random trials anyway), so
a dry run shows its cells; every later round is chosen by Optuna's TPE sampler from the results of the
rounds before it (workflow.sweep.tpe) and written to results/<study>/search/round-<r>.json. The study
is given the rounds chosen so far (workflow.sweep.decisions reads them) and reads no file itself: a
round's cells exist once the study is built with its file's content.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from workflow.core import paths
from workflow.study.config import ConfigError
from workflow.study.sampling import TRAINING_PREFIX, RandomSearch, build_random

TPE_AXES = ("batch_size", "lr", "optimizer")  # the axes TPE may draw, besides training keys
# What a TPE search optimises: a history.csv column, and whether Optuna maximises or minimises it.
TPE_METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
# Further objectives of a multi-objective search (`metric: [val_accuracy, train_time_s]`): metrics.json keys.
COST_METRICS = {"train_time_s": "minimize"}
DEFAULT_ROUND = 4


@dataclass(frozen=True)
class TpeSearch(RandomSearch):
    """`n` configurations per combination of the grid's axes, chosen `per_round` at a time."""

    per_round: int = DEFAULT_ROUND
    objectives: tuple[str, ...] = ("val_accuracy",)  # what Optuna optimises: a validation metric, then costs
    folder: str = ""  # the search folder: round files and Optuna's journal
    chosen_rounds: dict = field(default_factory=dict, compare=False)  # {round >= 1: its round file's content}

    @property
    def metric(self) -> str:
        """The validation metric optimised (the first objective): what a halved search ranks by."""
        return self.objectives[0]

    @property
    def directions(self) -> list[str]:
        """Optuna's direction of each objective."""
        return [{**TPE_METRICS, **COST_METRICS}[objective] for objective in self.objectives]

    @property
    def rounds(self) -> int:
        return math.ceil(self.n / self.per_round)

    def round_of(self, index: int) -> int:
        """The round of trial `index` (per combination)."""
        return index // self.per_round

    def round_numbers(self, round_index: int) -> range:
        """The trial numbers (per combination) of a round: 0 to per_round - 1 for the first."""
        start = round_index * self.per_round
        return range(start, min(start + self.per_round, self.n))

    def first_round(self) -> list[dict]:
        """The first round's draws: the random search's first ones."""
        return RandomSearch(n=len(self.round_numbers(0)), seed=self.seed, dimensions=self.dimensions).draws()

    def round_path(self, round_index: int) -> str:
        return paths.round_file(self.folder, round_index)

    def chosen(self, round_index: int) -> dict | None:
        """A later round's configurations per combination (its file's content), or None before it is chosen."""
        return self.chosen_rounds.get(round_index)

    def planned_values(self, axis: str) -> set | None:
        """A drawn axis's possible values (a choice's, or a range's ends), so that the tables and charts
        planned before the run are those its later rounds give; None for an axis that is not drawn."""
        dimension = next((d for d in self.dimensions if d.key == axis), None)
        return None if dimension is None else set(dimension.values)

    def written_rounds(self) -> list[int]:
        """The later rounds chosen so far, in order (a round is chosen only after the ones before it)."""
        return [r for r in range(1, self.rounds) if r in self.chosen_rounds]

    def group_draws(self, group: str) -> list[dict]:
        """One combination's configurations: the first round's and those of every round written so far."""
        draws = self.first_round()
        for round_index in range(1, self.rounds):
            chosen = self.chosen(round_index)
            if chosen is None or group not in chosen["groups"]:
                break
            draws += chosen["groups"][group]
        return draws

    def describe(self) -> str:
        """One line for `python -m workflow cells`."""
        done = len(self.written_rounds())
        return (f"TPE search: {self.n} configurations per combination of the grid's axes in {self.rounds} rounds "
                f"of {self.per_round}, by {' and '.join(self.objectives)}; round 0 is drawn at random, {done} of the "
                f"{self.rounds - 1} later rounds are chosen so far (the rest are decided as results arrive)")


def build_tpe(search: dict, sampling: RandomSearch, config: dict, rounds: dict[int, dict]) -> TpeSearch:
    """A TPE search's settings, checked: what it may draw, its round size and metric."""
    for key in sampling.keys:
        if key not in TPE_AXES and not key.startswith(TRAINING_PREFIX):
            raise ConfigError(f"search.space.{key}: a tpe search draws {list(TPE_AXES)} and training keys only; "
                              f"list {key} in the grid")
    objectives = search.get("metric", "val_accuracy")
    objectives = (objectives,) if isinstance(objectives, str) else tuple(objectives)
    if objectives[0] not in TPE_METRICS:
        raise ConfigError(f"search.metric: the first objective is a validation metric, one of {list(TPE_METRICS)}; "
                          f"got {objectives[0]!r}")
    unknown = sorted(set(objectives[1:]) - set(TPE_METRICS) - set(COST_METRICS))
    if unknown or len(set(objectives)) < len(objectives):
        raise ConfigError(f"search.metric: objectives {list(objectives)} must be distinct, of "
                          f"{list(TPE_METRICS) + list(COST_METRICS)}")
    out = paths.study_folder(config.get("results_dir", "results"), config["study"])
    return TpeSearch(n=sampling.n, seed=sampling.seed, dimensions=sampling.dimensions,
                     per_round=search.get("round", DEFAULT_ROUND), objectives=objectives,
                     folder=paths.search_folder(out), chosen_rounds=dict(rounds))


def drawn_values(cell, keys) -> dict:
    """A cell's values of the drawn keys."""
    return {key: getattr(cell.training, key[len(TRAINING_PREFIX):]) if key.startswith(TRAINING_PREFIX) else getattr(cell, key)
            for key in keys}


def cells_by_group(study) -> dict[str, dict[str, object]]:
    """The study's grid cells by combination of the grid's axes (the group_key the grid drew them for),
    then by their drawn values (as JSON)."""
    search = study.sampling
    groups: dict[str, dict[str, object]] = {}
    for cell in study.grid_cells:
        values = json.dumps(drawn_values(cell, search.keys), sort_keys=True)
        groups.setdefault(study.search_groups[cell.id], {})[values] = cell
    return groups


def round_cells(study, round_index: int) -> list:
    """The cells of one round, every combination's (the study must know the round: its file exists)."""
    search = study.sampling
    numbers = search.round_numbers(round_index)
    cells = []
    for group, by_values in sorted(cells_by_group(study).items()):
        draws = search.group_draws(group)[numbers.start:numbers.stop]
        cells += [by_values[json.dumps(values, sort_keys=True)] for values in draws]
    return cells


def round_inputs(study, round_index: int, read) -> list[str]:
    """What choosing a round reads: the metrics of every cell of the rounds before it; `read(r)` makes
    sure the study knows round r (r >= 1)."""
    for earlier in range(1, round_index):
        read(earlier)
    return [paths.cell_outputs(study.cell_dir(cell.id))["metrics"]
            for earlier in range(round_index) for cell in round_cells(study, earlier)]


def sampled_search(config: dict, training_keys, rounds: dict[int, dict]) -> RandomSearch | None:
    """The study's random or TPE search (`rounds`: a TPE search's later rounds chosen so far), or None
    when it searches otherwise."""
    search, grid = config.get("search"), config["grid"]
    if not isinstance(search, dict) or search.get("method") not in ("random", "tpe"):
        return None
    sampling = build_random(search, grid, training_keys)
    return build_tpe(search, sampling, config, rounds) if search["method"] == "tpe" else sampling
