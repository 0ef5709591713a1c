"""Random search (``search: {method: random}``): cells drawn from a space instead of listed in a grid.

Draw i depends only on the search's seed and i (and on the draws before it, which it may not
repeat), so raising `n` keeps draws 0..n-1 and their cells: nothing is renamed or re-run. Every
drawn number is rounded to SIGNIFICANT digits, the value the cell stores and its id shows. The draws
are the same for every combination of the grid's axes (each group gets the same n configurations).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import yaml

from workflow.study.config import SCHEMA, ConfigError
from workflow.core.catalogue import model_name_error

SIGNIFICANT = 3  # digits a drawn number keeps
TRAINING_PREFIX = "training."
# The grid axes a random search needs, from the grid or the space (the schema says which keys a space
# may draw), and the axes that take numbers.
REQUIRED_AXES = ("batch_size", "lr", "optimizer")
WHOLE_NUMBER_AXES = ("resolution", "batch_size")
NUMBER_AXES = ("lr",)
# Statuses of a finished cell whose validation metric counts (TPE is told it, the search chart draws it).
USABLE_STATUSES = ("ok", "unstable")
# A draw that repeats an earlier one is drawn again, at most this many times (then it is kept: two
# equal draws are one cell).
REDRAWS = 100


@dataclass(frozen=True)
class Dimension:
    """One key of the space: an axis or `training.<key>`, drawn as `kind` over `values`."""

    key: str
    kind: str  # choice | uniform | loguniform | int
    values: tuple

    @property
    def log(self) -> bool:
        """Whether it is drawn on a log scale (and charted on a log axis)."""
        return self.kind == "loguniform"

    @property
    def continuous(self) -> bool:
        return self.kind != "choice"

    def draw(self, rng: np.random.Generator):
        """One value, rounded to what a cell stores."""
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        low, high = self.values
        if self.kind == "int":
            return int(rng.integers(low, high + 1))
        return self.stored(float(np.exp(rng.uniform(np.log(low), np.log(high)))) if self.log
                           else float(rng.uniform(low, high)))

    def stored(self, value):
        """A value as a cell stores it: a number rounded to SIGNIFICANT digits, within the bounds."""
        if self.kind == "choice":
            return value
        if self.kind == "int":
            return int(value)
        return min(max(rounded(value), self.values[0]), self.values[1])


def rounded(value: float) -> float:
    """A drawn number as stored: SIGNIFICANT significant digits."""
    return float(f"{value:.{SIGNIFICANT}g}")


@dataclass(frozen=True)
class RandomSearch:
    """`n` draws from `dimensions`, seeded by `seed`."""

    n: int
    seed: int
    dimensions: tuple[Dimension, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(dimension.key for dimension in self.dimensions)

    def describe(self) -> str:
        """One line for `python -m workflow cells`."""
        return (f"random search: {self.n} draws (seed {self.seed}) per combination of the grid's axes, of "
                + ", ".join(f"{d.key} ({d.kind} {list(d.values)})" for d in self.dimensions))

    def planned_values(self, axis: str) -> set | None:
        """The values an axis may take before the run, where its cells do not say (see TpeSearch)."""
        return None

    def round_of(self, index: int) -> int | None:
        """The round that draws configuration `index` (see TpeSearch); None: a random search has no rounds."""
        return None

    def group_draws(self, group: str) -> list[dict]:
        """The draws of one combination of the grid's axes: the same for every one."""
        return self.draws()

    def draws(self) -> list[dict]:
        """The `n` draws, each {key: value}; the first k are the same for any n >= k."""
        draws: list[dict] = []
        seen: set[str] = set()
        for index in range(self.n):
            for attempt in range(REDRAWS):
                values = draw(self.seed, index, self.dimensions, attempt)
                if json.dumps(values, sort_keys=True) not in seen:
                    break
            seen.add(json.dumps(values, sort_keys=True))
            draws.append(values)
        return draws


def draw(seed: int, index: int, dimensions: tuple[Dimension, ...], attempt: int = 0) -> dict:
    """Draw `index` (its `attempt`-th try): each key from its own stream, seeded by the search seed,
    the index and the key, so that adding a key to the space leaves the other keys' values alone."""
    return {dim.key: dim.draw(np.random.default_rng([seed, index, zlib.crc32(dim.key.encode()), attempt]))
            for dim in dimensions}


@lru_cache(maxsize=1)
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _value_schema(key: str) -> dict | None:
    """What the schema allows for one value of a key: an axis's definition or a training key's."""
    defs = _schema()["$defs"]
    if key.startswith(TRAINING_PREFIX):
        value = defs["training"]["properties"].get(key[len(TRAINING_PREFIX):])
    else:
        value = defs[key]
    return None if value is None else {**value, "$defs": defs}


def _check_dimension(key: str, kind: str, values: list) -> None:
    """A distribution's rules: a range's ends in order, the kinds an axis takes, and every choice (or a
    range's two ends) a value the key allows."""
    import jsonschema

    where = f"search.space.{key}.{kind}"
    if kind != "choice" and values[0] >= values[1]:
        raise ConfigError(f"{where}: the low end must be below the high end, got {values}")
    if not key.startswith(TRAINING_PREFIX):
        if kind != "choice" and key not in WHOLE_NUMBER_AXES + NUMBER_AXES:
            raise ConfigError(f"search.space.{key}: {key} takes named values; draw it with choice")
        if kind in ("uniform", "loguniform") and key in WHOLE_NUMBER_AXES:
            raise ConfigError(f"search.space.{key}: {key} takes whole numbers; draw it with int or choice")
    schema = _value_schema(key)
    for i, value in enumerate(values if schema is not None else []):
        problem = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
        if problem is not None:
            raise ConfigError(f"{where}[{i}]: {problem.message}")
        if key == "model" and (unknown := model_name_error(value)):
            raise ConfigError(f"{where}[{i}]: {unknown}")


def build_random(search: dict, grid: dict, training_keys) -> RandomSearch:
    """A random search's settings, checked against the grid (a drawn axis replaces the grid's, which may
    list one value at most; the axes a cell needs come from one of them) and the training keys there are."""
    space = search.get("space")
    if not space or "n" not in search:
        raise ConfigError(f"search: method {search['method']!r} needs `n` (draws per grid combination) and a `space`")
    dimensions = []
    for key in sorted(space):
        (kind, values), = space[key].items()
        if len(grid.get(key, [])) > 1:  # one value, e.g. the schema's default, is replaced by the draws
            raise ConfigError(f"search.space.{key}: the grid lists {len(grid[key])} values of {key}; "
                              f"list it in the grid or draw it, not both")
        name = key[len(TRAINING_PREFIX):] if key.startswith(TRAINING_PREFIX) else None
        if name is not None and name not in training_keys:
            raise ConfigError(f"search.space.{key}: unknown training key {name!r}; known: {sorted(training_keys)}")
        if name is not None and name in grid.get("training", {}):
            raise ConfigError(f"search.space.{key}: {name} is also swept by grid.training; sweep it or draw it, not both")
        _check_dimension(key, kind, values)
        dimensions.append(Dimension(key=key, kind=kind, values=tuple(values)))
    missing = [axis for axis in REQUIRED_AXES if axis not in grid and axis not in space]
    if missing:
        raise ConfigError(f"grid.{missing[0]}: required, unless search.space draws it")
    return RandomSearch(n=search["n"], seed=search.get("seed", 0), dimensions=tuple(dimensions))


SEARCH_GROUP = "search_group"  # where apply_draws puts a drawn cell's group_key
SEARCH_INDEX = "search_index"  # and its draw's index in its group (what its Hyperband bracket follows)


def group_key(combo: dict, keys) -> str:
    """A combination of the grid's axes (and grid.training values) as text: the draws of a TPE search
    are its own per combination."""
    fixed = {key: float(value) if key == "lr" else value
             for key, value in combo.items() if key != "params" and key not in keys
             and not (key == "training" and not value)}  # a combination's own training settings, when any
    fixed.update({f"{TRAINING_PREFIX}{key}": value for key, value in combo["params"].items()})
    return json.dumps(fixed, sort_keys=True)


def sampled_grid(grid: dict, sampling: RandomSearch | None) -> dict:
    """The grid to expand: each drawn axis takes one placeholder value that `apply_draws` replaces."""
    if sampling is None:
        return grid
    return {**grid, **{key: [None] for key in sampling.keys if not key.startswith(TRAINING_PREFIX)}}


def apply_draws(combos: list[dict], sampling) -> list[dict]:
    """Each combination of the grid's axes once per draw (its group's draws), the drawn values in place,
    its group's key under SEARCH_GROUP and the draw's index under SEARCH_INDEX."""
    if sampling is None:
        return combos
    cells = []
    for combo in combos:
        group = group_key(combo, sampling.keys)
        for index, values in enumerate(sampling.group_draws(group)):
            cell = {**combo, "params": dict(combo["params"]), SEARCH_GROUP: group, SEARCH_INDEX: index}
            for key, value in values.items():
                if key.startswith(TRAINING_PREFIX):
                    cell["params"][key[len(TRAINING_PREFIX):]] = value
                else:
                    cell[key] = value
            cells.append(cell)
    return cells
