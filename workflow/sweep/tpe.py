"""TPE rounds (``search: {method: tpe}``): Optuna's TPE sampler chooses each round's configurations from
the results of every round before it.

One Optuna study per combination of the grid's axes lives in a journal file under
results/<study>/search/ (JournalStorage with JournalFileBackend). Trial i of a combination is its i-th
configuration: round r holds trials r x round ... (r + 1) x round - 1. A round's job first records the
results of every earlier cell (the first round's, drawn at random, are enqueued as they were drawn),
then asks for the round's trials. A halved search's cells are told their value at each rung they were
ranked at, and a cell a ranking stopped is a pruned trial (TPE ranks it below the completed ones by
how far it got). Each value is suggested by a sampler seeded by the search seed, the
trial's number and the key, and TPE ignores unfinished trials, so a suggestion depends only on the
finished trials: a round's job that crashes part way keeps the trials it asked and, rerun, asks the
rest and gets the same answers.
"""

from __future__ import annotations

import json
import math
import os
import zlib

import numpy as np
import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from workflow.core import paths
from workflow.study.sampling import USABLE_STATUSES
from workflow.study.tpe_space import COST_METRICS, TpeSearch, cells_by_group
from workflow.sweep.halving import rung_value

optuna.logging.set_verbosity(optuna.logging.WARNING)


def rung_values(metrics: dict) -> dict[int, float]:
    """A halved cell's value at each rung it was ranked at, by the rung's budget in epochs (what Optuna
    takes as intermediate values); {} for a cell that was not halved."""
    halving = metrics.get("halving") or {}
    return {halving["rungs"][place["rung"]]: place["value"] for place in halving.get("ranks", [])
            if place["value"] is not None and math.isfinite(place["value"])}


def objective_value(metrics: dict, history: pd.DataFrame, objective: str) -> float | None:
    """A finished cell's value of one objective: its best validation metric (history.csv), or a cost from
    metrics.json (COST_METRICS); None when it has no finite value."""
    value = metrics.get(objective) if objective in COST_METRICS else rung_value(history, objective)
    return float(value) if value is not None and math.isfinite(value) else None


def cell_result(metrics_file, objectives) -> tuple[TrialState, list[float] | None, dict[int, float]]:
    """What Optuna is told about a finished cell: its value of each objective (the best validation
    metric first), a pruned trial (a halved cell a ranking stopped), or a failure (failed, out of memory,
    diverged, or no finite value); and a halved cell's values at its rungs."""
    metrics = json.loads(open(metrics_file).read())
    history_file = os.path.join(os.path.dirname(metrics_file), paths.HISTORY_CSV)
    steps = rung_values(metrics)
    if metrics["status"] not in USABLE_STATUSES or not os.path.getsize(history_file):
        return TrialState.FAIL, None, steps
    if metrics.get("pruned"):
        return TrialState.PRUNED, None, steps
    history = pd.read_csv(history_file)
    values = [objective_value(metrics, history, objective) for objective in objectives]
    if None in values:
        return TrialState.FAIL, None, steps
    return TrialState.COMPLETE, values, steps


def _sampler(search: TpeSearch, number: int, key: str) -> optuna.samplers.TPESampler:
    seed = int(np.random.SeedSequence([search.seed, number, zlib.crc32(key.encode())]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.per_round)


def _suggest(trial: optuna.Trial, dimension, search: TpeSearch):
    """One value for a trial, from a sampler seeded for this trial and key, as the cell stores it."""
    trial.study.sampler = _sampler(search, trial.number, dimension.key)
    if dimension.kind == "choice":
        return trial.suggest_categorical(dimension.key, list(dimension.values))
    low, high = dimension.values
    if dimension.kind == "int":
        return trial.suggest_int(dimension.key, low, high)
    return dimension.stored(trial.suggest_float(dimension.key, low, high, log=dimension.log))


def _trial(study: optuna.Study, number: int, enqueue: dict | None) -> optuna.Trial:
    """Trial `number` of a study: asked now (with the values `enqueue` fixes, if any) unless it exists."""
    trials = study.get_trials(deepcopy=False)
    if number > len(trials):
        raise ValueError(f"trial {number} of {study.study_name} comes after {len(trials)} trials only")
    if number == len(trials):
        if enqueue is not None:
            study.enqueue_trial(enqueue)
        return study.ask()
    if trials[number].state == TrialState.WAITING:  # enqueued by a job that stopped before asking it
        return study.ask()
    return optuna.Trial(study, trials[number]._trial_id)


def ask(study: optuna.Study, number: int, search: TpeSearch, enqueue: dict | None = None) -> dict:
    """Trial `number`'s configuration: its stored values, suggesting those it does not have yet."""
    trials = study.get_trials(deepcopy=False)
    if number < len(trials) and set(search.keys) <= set(trials[number].params):
        return {dim.key: dim.stored(trials[number].params[dim.key]) for dim in search.dimensions}
    trial = _trial(study, number, enqueue)
    if trial.number != number:
        raise ValueError(f"{study.study_name}: asked for trial {number}, Optuna gave {trial.number}")
    return {dim.key: _suggest(trial, dim, search) for dim in search.dimensions}


def record(study: optuna.Study, draws: list[dict], cells: dict, out, search: TpeSearch) -> None:
    """Make trial i hold configuration i of `draws` (enqueued where the journal lacks it: the first round,
    drawn at random), each told its cell's result."""
    for number, values in enumerate(draws):
        if ask(study, number, search, enqueue=values) != values:
            raise ValueError(f"{study.study_name}: trial {number} of {search.folder} is not {values}")
        trial = study.get_trials(deepcopy=False)[number]
        if trial.state != TrialState.RUNNING:
            continue
        cell = cells[json.dumps(values, sort_keys=True)]
        state, value, steps = cell_result(
            paths.cell_outputs(paths.cell_folder(out, paths.GRID, cell.id))["metrics"], search.objectives)
        for step, step_value in steps.items():
            optuna.Trial(study, trial._trial_id).report(step_value, step)  # a pruned trial's value: its last rung's
        study.tell(number, value, state=state)


def _short_rounds(search: TpeSearch, group: str, round_index: int) -> str:
    """Why a round cannot be chosen: a round before it is not chosen yet, or was chosen short (when `n`
    was smaller)."""
    for earlier in range(1, round_index):
        chosen = search.chosen(earlier)
        if chosen is None or group not in chosen["groups"]:
            return f"round {round_index} of {group}: round {earlier} is not chosen yet"
        if len(chosen["groups"][group]) < len(search.round_numbers(earlier)):
            return (f"round {round_index} of {group}: {search.round_path(earlier)} holds "
                    f"{len(chosen['groups'][group])} configurations, chosen when `n` was smaller; delete it to "
                    f"choose round {earlier} again with {len(search.round_numbers(earlier))} (its trials are kept)")
    return f"round {round_index} of {group}: the rounds before it are not all chosen yet"


def choose_round(study, round_index: int, log=print) -> dict:
    """Round `round_index`'s configurations (a round file's content), per combination of the grid's
    axes, given the results of every cell of the rounds before it."""
    search = study.sampling
    if not 1 <= round_index < search.rounds:
        raise ValueError(f"round {round_index}: Optuna chooses rounds 1 to {search.rounds - 1} (0 is drawn at random)")
    os.makedirs(search.folder, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(paths.journal_file(search.folder)))
    chosen = {}
    for group, cells in sorted(cells_by_group(study).items()):
        draws = search.group_draws(group)[: round_index * search.per_round]
        if len(draws) < round_index * search.per_round:
            raise ValueError(_short_rounds(search, group, round_index))
        optimised = optuna.create_study(study_name=group, storage=storage, load_if_exists=True,
                                        directions=search.directions)
        record(optimised, draws, cells, study.out, search)
        chosen[group] = []
        for number in search.round_numbers(round_index):
            chosen[group].append(ask(optimised, number, search))
            log(f"{group}: trial {number}: {chosen[group][-1]}")
    objectives = {"objectives": list(search.objectives)} if len(search.objectives) > 1 else {}
    return {"round": round_index, "metric": search.metric, **objectives, "groups": chosen}
