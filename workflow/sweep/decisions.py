"""What a study's search has decided so far, read from its files, and the study as far as it goes.

`build_study(config, rounds)` is pure; the rounds a TPE search chose (results/<study>/search/round-<r>.json),
the rankings successive halving wrote (halving/rung-<k>.json) and the models rank-then-tune chose
(rank/chosen-*.json) are read here and nowhere else.
`SweepState` is the one view of the study that the Snakefile and every job use: the study built from its
config with the rounds chosen so far, rebuilt when a checkpoint job has chosen another round.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from workflow.core import paths
from workflow.data.datasets import DatasetConfigError, check_sources, downloads
from workflow.export.weights_check import WeightsFileError, check_study_weights
from workflow.study.config import ConfigError, check_config, check_config_files, load_config, read_yaml
from workflow.study.grid import Study, build_study
from workflow.study.model_ranking import choice_path
from workflow.sweep.model_choice import ranked_study


def read_rounds(config: dict) -> dict[int, dict]:
    """The later rounds of a TPE search chosen so far, {round: its file's content}, in order from round 1
    (a round is chosen only after the ones before it); {} for any other study."""
    search = config.get("search")
    if not isinstance(search, dict) or search.get("method") != "tpe":
        return {}
    folder = paths.search_folder(paths.study_folder(config.get("results_dir", "results"), config["study"]))
    rounds: dict[int, dict] = {}
    while os.path.exists(path := paths.round_file(folder, len(rounds) + 1)):
        rounds[len(rounds) + 1] = read_decision(
            path, dict, ValueError, "a round file", f"delete it and run again to choose round {len(rounds) + 1} "
            "again (Optuna's journal keeps its trials)")
    return rounds


def read_decision(path, groups_type: type, error: type[ValueError], what: str, remedy: str) -> dict:
    """A decision file's content, whose `groups` is of `groups_type` (dict or list); any other file (unreadable,
    not JSON, no such `groups`) is `error` naming it, what it should be (`what`) and what to do (`remedy`)."""
    try:
        with open(path) as f:
            content = json.load(f)
        if not isinstance(content.get("groups"), groups_type):
            raise ValueError(f"no `groups` {'mapping' if groups_type is dict else 'list'}")
    except (OSError, ValueError, AttributeError) as failure:
        raise error(f"{path} is not {what} ({type(failure).__name__}: {failure}); {remedy}") from None
    return content


def read_model_choice(study: Study) -> tuple[str, dict] | None:
    """The models rank-then-tune chose (`rank.keep`): its file and content once written, else None (and for
    any other study). The file's name holds its settings, so a study with another `keep` reads another file."""
    if study.ranking is None or study.ranking.keep is None:
        return None
    path = choice_path(study.out, study.ranking)
    if not os.path.exists(path):
        return None
    return path, read_decision(path, list, ConfigError, "a choice of models",
                               "delete it and run again to choose again (the scores are kept)")


def build_decided(config: dict) -> Study:
    """The study with every decision its files hold: the TPE rounds chosen so far, the models chosen."""
    built = build_study(config, read_rounds(config))
    study = ranked_study(built, config)
    choice = read_model_choice(study)
    return study if choice is None else ranked_study(built, config, choice)


@lru_cache(maxsize=256)
def _read_json(path: str, mtime_ns: int) -> dict:
    with open(path) as f:
        return json.load(f)


def load_ranking(path: str | Path) -> dict:
    """A ranking file's content (successive halving), read once per version of the file (`mtime` decides)."""
    return _read_json(str(path), os.stat(path).st_mtime_ns)


class SweepState:
    """A study as far as its search has decided: built once from its validated config, the TPE rounds
    chosen so far and the models chosen, and again when `know_round` or `know_choice` learns of a later
    decision. Values derived from the study (`derived`) are kept until it is rebuilt."""

    def __init__(self, config: dict):
        self.config = config
        self.study: Study = build_decided(config)
        check_sources(self.study.datasets)  # the user's files, prepared or not: a missing folder names its key
        self._derived: dict = {}

    def know_round(self, round_index: int) -> None:
        """Make sure the study has the cells of TPE round `round_index` (its file is written)."""
        if round_index not in self.study.sampling.chosen_rounds:
            self.study = build_decided(self.config)
            self._derived.clear()

    def know_choice(self) -> None:
        """Make sure the study's grid holds the models rank-then-tune chose (its choice file is written)."""
        if not self.study.models_chosen:
            self.study = build_decided(self.config)
            self._derived.clear()

    def derived(self, name: str, compute):
        """`compute(study)`, computed once per version of the study."""
        if name not in self._derived:
            self._derived[name] = compute(self.study)
        return self._derived[name]

    def ranking(self, rung: int, round_index: int | None = None) -> dict:
        """The ranking successive halving wrote for a rung (of one TPE round's ladder, if given)."""
        return load_ranking(self.study.ranking_path(rung, round_index))


def load_sweep(study_file) -> SweepState:
    """The study a job is given (`--configfile`): its file checked and filled in, and the rounds chosen so far."""
    return SweepState(load_config(study_file))


class StudyError(ValueError):
    """A study that no job may start from: one line naming its files, then `problem` (the key, what is wrong)."""

    def __init__(self, files: str, problem: str):
        super().__init__(f"Invalid study config {files}: {problem}")
        self.problem = problem


def load_checked_study(configfiles, config: dict | None = None) -> SweepState:
    """The study of `configfiles` checked as it must be before any job is planned: each file read strictly
    (a repeated key), the config against the schema (defaults filled in), its cells built and its datasets'
    own files checked (`SweepState`), its `weights:` files against their models, its downloads. `config`: what
    Snakemake merged from the files (default: the one file's content). The Snakefile, `cells`, `status` and
    the tests call this alone; a refused study raises StudyError."""
    files = ", ".join(map(str, configfiles)) or "config.yaml"
    try:
        check_config_files(configfiles)
        if config is None:
            (path,) = configfiles
            config = read_yaml(path)
            if not isinstance(config, dict):
                raise ConfigError("a study config must be a YAML mapping")
        check_config(config)
        sweep = SweepState(config)
        check_study_weights(sweep.study.cells.values())
        downloads(sweep.study.datasets, config["raw_dir"])
    except (ConfigError, DatasetConfigError, WeightsFileError) as error:
        raise StudyError(files, str(error)) from None
    except OSError as error:  # a study file that is not there
        raise StudyError(files, f"{error.strerror}: {error.filename}") from None
    return sweep
