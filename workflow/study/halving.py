"""A study's search: a plain grid, or successive halving with its ladder of budgets (over the grid, over
randomly drawn cells, workflow.study.sampling, or within each round of a TPE search), checked."""

from __future__ import annotations

import math
from dataclasses import dataclass

from workflow.study.config import ConfigError

# Successive halving's settings that a study may leave out (see `search` in the schema).
DEFAULT_HALVING = {"keep": 1 / 3, "metric": "val_accuracy", "group_by": ["dataset", "model"]}
# Ranking metrics: a history.csv column and whether its best value so far is the largest or the smallest.
HALVING_METRICS = {"val_accuracy": max, "val_loss": min}
HALVING_KEYS = ("rungs", "keep", "metric", "group_by")
BRACKET = "bracket"  # a drawn cell's Hyperband bracket, in its config when its study has several


@dataclass(frozen=True)
class Halving:
    """Successive halving: every grid cell trains to the first rung's budget (epochs, all stages
    together); within each group the best `keep` share by `metric` goes on to the next rung,
    continuing from its own checkpoint, and so on up the ladder."""

    rungs: tuple[int, ...]  # budgets in epochs, strictly increasing
    keep: float  # share of each group's cells that goes on after a rung
    metric: str  # a key of HALVING_METRICS
    group_by: tuple[str, ...]  # axes whose values make a group; cells compete only within their group
    brackets: int = 1  # Hyperband's brackets: bracket b starts its cells at rung b

    @property
    def last(self) -> int:
        """Index of the last rung: cells that reach it are the finalists."""
        return len(self.rungs) - 1

    def budget(self, rung: int) -> int:
        """A rung's budget in epochs, or an error naming the rungs there are."""
        if not 0 <= rung <= self.last:
            raise ValueError(f"rung {rung}: the ladder has rungs 0 to {self.last}")
        return self.rungs[rung]

    def survivors(self, cells: int) -> int:
        """How many of a group's `cells` go on: ceil(keep x cells), at least one."""
        return max(1, math.ceil(self.keep * cells - 1e-9)) if cells else 0

    def group(self, cell: dict) -> dict:
        """A cell's (as a dict) values on the group axes, and its bracket when the study has several."""
        group = {axis: cell[axis] for axis in self.group_by}
        return {**group, BRACKET: cell[BRACKET]} if cell.get(BRACKET) is not None else group

    def bracket_weights(self) -> list[int]:
        """Hyperband's share of the draws per bracket, with eta = 1 / keep: the bracket starting at rung b
        (s = last - b halvings to go) weighs ceil((last + 1) / (s + 1) * eta^s)."""
        eta = 1 / self.keep
        return [math.ceil((self.last + 1) / (self.last - b + 1) * eta ** (self.last - b) - 1e-9)
                for b in range(self.brackets)]

    def to_dict(self) -> dict:
        brackets = {"brackets": self.brackets} if self.brackets > 1 else {}  # one bracket: as before brackets
        return {"rungs": list(self.rungs), "keep": self.keep, "metric": self.metric, "group_by": list(self.group_by),
                **brackets}

    @classmethod
    def from_dict(cls, data: dict) -> "Halving":
        return cls(rungs=tuple(data["rungs"]), keep=data["keep"], metric=data["metric"],
                   group_by=tuple(data["group_by"]), brackets=data.get("brackets", 1))


def bracket_sequence(weights: list[int], n: int) -> list[int]:
    """The brackets of draws 0 to n - 1: smooth weighted round robin over `weights`, so each period of
    sum(weights) draws holds each bracket as often as it weighs, and draw i's bracket depends on i alone."""
    credit = [0] * len(weights)
    sequence = []
    for _ in range(n):
        credit = [c + w for c, w in zip(credit, weights)]
        chosen = max(range(len(weights)), key=lambda b: (credit[b], -b))
        credit[chosen] -= sum(weights)
        sequence.append(chosen)
    return sequence


def default_rungs(longest: int) -> list[int]:
    """Three rungs a factor 3 apart that end at the longest training: 20 epochs -> [3, 7, 20]."""
    return sorted({max(1, math.ceil(longest / 9)), max(1, math.ceil(longest / 3)), longest})


def _check_rungs(rungs: list, longest: int) -> None:
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


def _only(search: dict, allowed: set, method: str) -> dict:
    extra = sorted(set(search) - allowed - {"method"})
    if extra:
        raise ConfigError(f"search: {extra} do not apply to method {method!r}")
    return search


def _tpe_halving_part(search: dict) -> dict | None:
    """A TPE search's halving settings: as a random search's, each round halved on its own (one ladder per
    round, no brackets), ranked by the `metric` TPE optimises."""
    if "brackets" in search:
        raise ConfigError("search.brackets: a tpe search halves each round on one ladder; Hyperband's brackets "
                          "need method random")
    part = _halving_part({key: value for key, value in search.items() if key != "metric"})
    if part is not None and "metric" in search:
        if not isinstance(search["metric"], str):
            raise ConfigError(f"search.metric: a halved tpe search ranks its rungs by one metric, not by "
                              f"{search['metric']}; several objectives need `halving: false`")
        part["metric"] = search["metric"]
    return part


def _halving_part(search: dict) -> dict | None:
    """A sampled search's halving settings (`halving: true` and the rung keys), or None without halving."""
    rung_keys = sorted(set(search) & {*HALVING_KEYS, "brackets"})
    if not search.get("halving"):
        if rung_keys:
            raise ConfigError(f"search.{rung_keys[0]}: halving settings need `halving: true` in a {search['method']} search")
        return None
    return {key: search[key] for key in rung_keys}


def build_search(search, grid_cells: list, axes: tuple[str, ...]) -> Halving | None:
    """The study's search: None for a grid search, else its successive-halving settings, checked
    against its grid cells (their trainings) and the grid's `axes` (in their order)."""
    if search is None:
        return None
    if isinstance(search, str):
        search = {"method": search}
    method = search.get("method", "grid")
    if method == "grid":
        extra = sorted(set(search) - {"method"})
        if extra:
            raise ConfigError(f"search: {extra} only apply to method 'halving'")
        return None
    if method == "tpe":
        search = _tpe_halving_part(search)
    else:
        search = _halving_part(search) if method == "random" else _only(search, set(HALVING_KEYS), method)
    if search is None:
        return None
    settings = {**DEFAULT_HALVING, **search}
    longest = max(cell.training.epochs for cell in grid_cells)
    rungs = list(settings.get("rungs") or default_rungs(longest))
    _check_rungs(rungs, longest)
    if not 0 < settings["keep"] < 1:
        raise ConfigError(f"search.keep: the share that goes on must be between 0 and 1, got {settings['keep']}")
    if not isinstance(settings["metric"], str) or settings["metric"] not in HALVING_METRICS:
        raise ConfigError(f"search.metric: unknown metric {settings['metric']!r}; choose one of {list(HALVING_METRICS)}")
    unknown = sorted(set(settings["group_by"]) - set(axes))
    if unknown:
        raise ConfigError(f"search.group_by: unknown axes {unknown}; choose among {list(axes)}")
    brackets = settings.get("brackets", 1)
    if brackets > len(rungs):
        raise ConfigError(f"search.brackets: {brackets} brackets, but the ladder has {len(rungs)} rungs "
                          f"(bracket b starts at rung b); make it at most {len(rungs)}")
    return Halving(rungs=tuple(rungs), keep=float(settings["keep"]), metric=settings["metric"],
                   group_by=tuple(axis for axis in axes if axis in settings["group_by"]), brackets=brackets)
