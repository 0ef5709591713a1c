"""Ranking a study's candidate models from their cached features (study key `rank`), and rank-then-tune.

Every combination of a grid cell's dataset, model, resolution and starting weights is a *candidate*: its
backbone's features of the dataset (workflow.data.features) are scored by LogME and a linear probe
(workflow.results.ranking) into the `models` table. With `rank.keep: k` the grid's models are candidates
first: only the best k of each (dataset, resolution, weights) by `rank.by` enter the grid, once the
`choose_models` checkpoint has written their choice (workflow.sweep.model_choice; the study is given it by
workflow.sweep.decisions and reads no file itself). `read_score` is the one reader of a candidate's score file,
for the choice and the `models` table. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from workflow.core import paths
from workflow.core.backbones import model_folder
from workflow.core.cell import PRETRAIN_PREFIX, Cell
from workflow.study.config import ConfigError

RANK_BY = ("logme", "probe")  # what chooses: the LogME score, or the linear probe's validation accuracy


@dataclass(frozen=True)
class Candidate:
    """One backbone and starting weights on one dataset at one resolution: what one features file holds."""

    dataset: str
    model: str
    resolution: int
    weights: str

    @property
    def id(self) -> str:
        """`<dataset>/<model>/r<resolution>/<weights>`, the weights as `imagenet`, `none`, `pretrain-<name>` or
        `file-<stem>-<6 hex of its path>`: the folder of its scores under the study's ranking folder."""
        if self.weights in ("imagenet", "none"):
            start = self.weights
        elif self.weights.startswith(PRETRAIN_PREFIX):
            start = "pretrain-" + self.weights[len(PRETRAIN_PREFIX):]
        else:
            stem = self.weights.rsplit("/", 1)[-1].split(".", 1)[0]
            start = f"file-{stem}-{hashlib.sha1(self.weights.encode()).hexdigest()[:6]}"
        return f"{self.dataset}/{model_folder(self.model)}/r{self.resolution}/{start}"

    @property
    def group(self) -> tuple[str, int, str]:
        """What the models it competes with share: dataset, resolution and starting weights."""
        return self.dataset, self.resolution, self.weights


def candidate_of(cell: Cell) -> Candidate:
    return Candidate(cell.dataset, cell.model, cell.resolution, cell.weights)


@dataclass(frozen=True)
class Ranking:
    """`rank`: what chooses (`by`), and how many models of each group enter the grid (`keep`; None: all,
    the `models` table only)."""

    by: str
    keep: int | None
    candidates: tuple[Candidate, ...]

    def choice_name(self) -> str:
        """The choice file's name: its settings and a digest of the candidates, so that another `keep`, `by` or
        candidate list is another file (a stale choice is never read) and raising `keep` keeps the cells."""
        ids = json.dumps(sorted(candidate.id for candidate in self.candidates))
        return f"chosen-{self.by}-top{self.keep}-{hashlib.sha256(ids.encode()).hexdigest()[:8]}"

    def describe(self, chosen: bool) -> str:
        models = len({candidate.model for candidate in self.candidates})
        if self.keep is None:
            return f"rank: {len(self.candidates)} candidates scored by LogME and a linear probe (the models table)"
        state = "chosen" if chosen else "chosen once their features are scored (checkpoint choose_models)"
        return (f"rank-then-tune: the best {self.keep} of {models} models by {self.by} per dataset, resolution "
                f"and weights enter the grid; {state}")


def build_ranking(config: dict, cells: list[Cell]) -> Ranking | None:
    """The study's `rank` settings over the candidates of its grid cells (in their order), or None."""
    spec = config.get("rank")
    if spec is None:
        return None
    search = config.get("search")
    method = search.get("method") if isinstance(search, dict) else search
    keep = spec.get("keep")
    if keep is not None and method not in (None, "grid"):
        raise ConfigError(f"rank.keep: rank-then-tune chooses the models of a plain grid; search {method!r} "
                          f"chooses its cells itself (leave rank.keep out for the models table only)")
    candidates = tuple(dict.fromkeys(candidate_of(cell) for cell in cells))
    return Ranking(by=spec.get("by", "logme"), keep=keep, candidates=candidates)


def choice_path(out, ranking: Ranking) -> str:
    return paths.model_choice_file(out, ranking.choice_name())


def read_score(out, candidate_id: str) -> dict:
    """A candidate's score file's content (rule rank_model); one that cannot be read is an error naming it."""
    path = paths.score_file(out, candidate_id)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read ({type(error).__name__}: {error}); delete it and run again "
                         f"to score {candidate_id} again") from None


def chosen_models(choice: dict) -> dict[tuple[str, int, str], set[str]]:
    """{(dataset, resolution, weights): the models chosen} from a choice file's content."""
    return {(group["dataset"], int(group["resolution"]), group["weights"]): set(group["chosen"])
            for group in choice["groups"]}


def keep_chosen(cells: list[Cell], choice: dict, where: str) -> list[Cell]:
    """The grid cells whose model was chosen for their dataset, resolution and weights; a group the choice
    does not know is an error naming the file `where` (written for another study)."""
    chosen = chosen_models(choice)
    missing = {candidate_of(cell).group for cell in cells} - set(chosen)
    if missing:
        raise ConfigError(f"{where}: no choice for {sorted(missing)[0]}; delete it and run again to rank again")
    return [cell for cell in cells if cell.model in chosen[candidate_of(cell).group]]
