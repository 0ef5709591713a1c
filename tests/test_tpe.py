"""TPE search: rounds chosen by Optuna's TPE sampler from the cells before them, in a journal file; a
crashed round reruns to the same cells; failures are told as such; a dry run and a real run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import TrialState

from conftest import REPO, snakemake
from fakecells import study_config
from test_workflow import job_counts
from workflow.atomic import write_json
from workflow.gpu.slots import probe_key, probe_name, probe_spec
from workflow.core import paths
from workflow.study.config import ConfigError, check_config, load_config
from workflow.study.grid import build_study
from workflow.study.sampling import rounded
from workflow.study.tpe_space import cells_by_group, round_cells
from workflow.sweep.decisions import read_rounds
from workflow.sweep.halving import rank_inputs
from workflow.sweep.tpe import choose_round

SPACE = {"lr": {"loguniform": [1e-5, 1e-1]}, "training.dropout": {"uniform": [0, 0.5]}}


def tpe_config(tmp_path, method="tpe", n=12, per_round=4, space=None, **grid) -> dict:
    config = study_config(tmp_path, **grid)
    del config["grid"]["lr"]
    config["search"] = {"method": method, "n": n, "space": space or SPACE, "seed": 0,
                        **({"round": per_round} if method == "tpe" else {})}
    check_config(config)
    return config


def score(cell) -> float:
    """The fixture's validation accuracy: best at lr 1e-3 and dropout 0.2, smooth around it."""
    return 0.9 - 0.1 * abs(math.log10(cell.lr) + 3) - 0.2 * abs(cell.training.dropout - 0.2)


def cost(cell) -> float:
    """The fixture's training seconds: more dropout, slower (a trade-off against score's best at 0.2)."""
    return 10 + 100 * cell.training.dropout


def write_result(study, cell, status="ok") -> None:
    """A finished cell's metrics.json and history.csv (one epoch at the fixture's score and cost)."""
    folder = study.cell_dir(cell.id)
    if (folder / paths.METRICS_JSON).exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    accuracy = score(cell)
    pd.DataFrame([{"epoch": 1, "val_accuracy": accuracy, "val_loss": 1 - accuracy}]).to_csv(
        folder / paths.HISTORY_CSV, index=False)
    (folder / paths.METRICS_JSON).write_text(json.dumps({"cell": cell.id, "status": status,
                                                         "train_time_s": cost(cell)}))


def current(config):
    """The study with the rounds chosen so far, as the Snakefile and every job see it (SweepState)."""
    return build_study(config, read_rounds(config))


def run_rounds(config, statuses=None, log=None) -> object:
    """Every round as the rules run them: train (write) the known cells, choose the next round, reload."""
    study = current(config)
    for round_index in range(1, study.sampling.rounds):
        for cell in study.grid_cells:
            write_result(study, cell, (statuses or {}).get(cell.id, "ok"))
        write_json(study.sampling.round_path(round_index), choose_round(study, round_index, log=log or (lambda m: None)))
        study = current(config)
    for cell in study.grid_cells:
        write_result(study, cell)
    return study


def test_the_first_round_is_drawn_and_later_rounds_join_the_study_as_they_are_chosen(tmp_path):
    config = tpe_config(tmp_path, optimizer=["sgd", "adam"])
    study = current(config)
    assert len(study.grid_cells) == 8 and study.sampling.rounds == 3  # round 0: 4 per optimizer
    random = current(tpe_config(tmp_path, method="random", n=4, optimizer=["sgd", "adam"]))
    assert [c.id for c in study.grid_cells] == [c.id for c in random.grid_cells]
    assert "0 of the 2 later rounds are chosen so far (the rest are decided as results arrive)" in \
        study.sampling.describe()
    with pytest.raises(ValueError, match="round 2 of .*: round 1 is not chosen yet"):
        choose_round(study, 2)
    done = run_rounds(config)
    assert len(done.grid_cells) == 24 and len({c.id for c in done.grid_cells}) == 24
    assert sorted(c.id for c in round_cells(done, 0)) == sorted(c.id for c in study.grid_cells)
    for cell in done.grid_cells:  # stored as drawn: rounded, within bounds, in the id
        assert 1e-5 <= cell.lr <= 1e-1 and cell.lr == rounded(cell.lr)
        assert 0 <= cell.training.dropout <= 0.5 and f"-dropout{cell.training.dropout:g}" in cell.id


def test_a_round_that_crashed_part_way_reruns_to_the_same_cells(tmp_path):
    whole = run_rounds(tpe_config(tmp_path / "whole"))

    class Crash(Exception):
        pass

    asked = []

    def crash_after_two(message):
        asked.append(message)
        if len(asked) == 6:  # round 1's 4 trials, then 2 of round 2's
            raise Crash

    config = tpe_config(tmp_path / "crashed")
    with pytest.raises(Crash):
        run_rounds(config, log=crash_after_two)
    assert not current(config).sampling.chosen(2)  # the round file is written only at the end
    rerun = run_rounds(config)
    assert [c.id for c in rerun.grid_cells] == [c.id for c in whole.grid_cells]
    assert rerun.sampling.chosen(2) == whole.sampling.chosen(2)
    # a round asked again (its job rerun) gives the same answers
    assert choose_round(rerun, 2, log=lambda m: None) == whole.sampling.chosen(2)


def test_raising_n_keeps_every_chosen_cell_and_a_short_round_is_chosen_again_once_deleted(tmp_path):
    small = run_rounds(tpe_config(tmp_path, n=10))  # rounds of 4, 4, 2
    config = tpe_config(tmp_path, n=16)
    with pytest.raises(ValueError, match="round-2.json holds 2 configurations, chosen when `n` was smaller; "
                                         "delete it to choose round 2 again with 4"):
        choose_round(current(config), 3)
    (tmp_path / "results/hand/search/round-2.json").unlink()
    larger = run_rounds(config)
    assert len(larger.grid_cells) == 16
    assert {c.id for c in small.grid_cells} <= {c.id for c in larger.grid_cells}


def test_rounds_follow_combinations_with_their_own_training_and_a_swept_training_key(tmp_path):
    config = tpe_config(tmp_path, n=8, optimizer=["sgd", "adam"], space={"lr": SPACE["lr"]})
    config["grid"]["training"] = {"label_smoothing": [0.0, 0.1]}
    config["grid"]["overrides"] = [{"when": {"optimizer": name}, "set": {"training": {"dropout": dropout}}}
                                   for name, dropout in (("sgd", 0.1), ("adam", 0.3))]
    check_config(config)
    done = run_rounds(config)
    groups = cells_by_group(done)
    assert len(groups) == 4 and all(len(by_values) == 8 for by_values in groups.values())
    assert sorted((c.optimizer, c.training.dropout) for c in done.grid_cells) == \
        [("adam", 0.3)] * 16 + [("sgd", 0.1)] * 16
    assert sorted(c.id for r in range(2) for c in round_cells(done, r)) == sorted(c.id for c in done.grid_cells)


def test_failed_and_out_of_memory_cells_are_told_to_optuna_as_failures(tmp_path):
    config = tpe_config(tmp_path, n=8)
    first = current(config).grid_cells
    statuses = {first[0].id: "failed", first[1].id: "oom", first[2].id: "diverged"}
    study = run_rounds(config, statuses=statuses)
    storage = JournalStorage(JournalFileBackend(paths.journal_file(study.sampling.folder)))
    (group,) = cells_by_group(study)
    trials = optuna.load_study(study_name=group, storage=storage).trials
    assert [t.state for t in trials[:4]] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    assert trials[3].value == pytest.approx(score(first[3]))
    assert [t.state for t in trials[4:]] == [TrialState.RUNNING] * 4  # round 1: not told until a next round


def test_tpe_reaches_the_random_searchs_best_on_a_smooth_fixture(tmp_path):
    """24 cells each, over six search seeds: in one seed a lucky random draw can beat TPE, so the claim is
    on average (the best cell), and TPE's cells as a whole are better (their median) in nearly every seed."""
    best, medians_better = {"tpe": [], "random": []}, 0
    for seed in range(6):
        tpe = tpe_config(tmp_path / f"tpe-{seed}", n=24, per_round=4)
        random = tpe_config(tmp_path / f"random-{seed}", method="random", n=24)
        tpe["search"]["seed"] = random["search"]["seed"] = seed
        scores = {"tpe": sorted(map(score, run_rounds(tpe).grid_cells)),
                  "random": sorted(map(score, current(random).grid_cells))}
        assert len(scores["tpe"]) == len(scores["random"]) == 24
        for method in best:
            best[method].append(scores[method][-1])
        medians_better += scores["tpe"][12] > scores["random"][12]
    assert sum(best["tpe"]) >= sum(best["random"]) and medians_better >= 5


def test_a_multi_objective_search_tells_optuna_accuracy_and_training_time(tmp_path):
    config = tpe_config(tmp_path, n=12)
    config["search"]["metric"] = ["val_accuracy", "train_time_s"]
    check_config(config)
    study = run_rounds(config)
    assert study.sampling.directions == ["maximize", "minimize"]
    (group,) = cells_by_group(study)
    storage = JournalStorage(JournalFileBackend(paths.journal_file(study.sampling.folder)))
    optimised = optuna.load_study(study_name=group, storage=storage)
    assert optimised.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    told = [cell for r in range(2) for cell in round_cells(study, r)]  # round 2's cells are told by no round
    for trial, cell in zip(optimised.trials, told):
        assert trial.values == [pytest.approx(score(cell)), pytest.approx(cost(cell))]
    front = {trial.number for trial in optimised.best_trials}
    dominated = {i for i, a in enumerate(told) for b in told
                 if score(b) >= score(a) and cost(b) <= cost(a) and (score(b), cost(b)) != (score(a), cost(a))}
    assert front == set(range(len(told))) - dominated and front, "Optuna's Pareto front is the cells no other beats"
    chosen = json.loads(open(study.sampling.round_path(2)).read())
    assert chosen["objectives"] == ["val_accuracy", "train_time_s"] and len(chosen["groups"][group]) == 4


@pytest.mark.parametrize("search, message", [
    ({"space": {"train": {"choice": ["head", "all"]}}}, "search.space.train: a tpe search draws ['batch_size', 'lr', "
                                                         "'optimizer'] and training keys only"),
    ({"halving": True, "brackets": 2}, "search.brackets: a tpe search halves each round on one ladder"),
    ({"rungs": [1, 2]}, "search.rungs: halving settings need `halving: true` in a tpe search"),
    ({"metric": "val_auc"}, "search.metric: 'val_auc' is not one of"),
    ({"round": 1}, "search.round: 1 is less than the minimum of 2"),
    ({"metric": ["train_time_s", "val_accuracy"]}, "search.metric: the first objective is a validation metric"),
    ({"metric": ["val_accuracy", "train_time_s"], "halving": True},
     "search.metric: a halved tpe search ranks its rungs by one metric"),
    ({"metric": ["val_accuracy", "val_accuracy"]}, "search.metric: ['val_accuracy', 'val_accuracy'] has non-unique"),
])
def test_bad_tpe_settings_name_the_key(tmp_path, search, message):
    config = study_config(tmp_path)
    config["search"] = {"method": "tpe", "n": 8, "space": {"lr": {"uniform": [0.001, 0.1]}}, **search}
    with pytest.raises(ConfigError) as error:
        check_config(config)
        current(config)
    assert message in str(error.value)


@pytest.mark.parametrize("objectives", [["val_accuracy", "val_accuracy"], ["val_accuracy", "test_auc"]])
def test_objectives_the_schema_rejects_are_rejected_by_the_study_too(tmp_path, objectives):
    config = study_config(tmp_path)
    config["search"] = {"method": "tpe", "n": 8, "space": {"lr": {"uniform": [0.001, 0.1]}}, "metric": objectives}
    with pytest.raises(ConfigError, match=r"search\.metric: objectives .* must be distinct, of \['val_accuracy'"):
        current(config)  # without check_config: the study's own check


TINY_TPE = {
    "study": "tpe",
    "datasets": {"digits-5to9": {"source": "digits", "classes": [5, 6, 7, 8, 9]}},
    "grid": {"dataset": ["digits-5to9"], "model": ["resnet18"], "resolution": [16], "batch_size": [32],
             "optimizer": ["adam"], "weights": ["none"]},
    "search": {"method": "tpe", "n": 4, "round": 2, "space": {"lr": {"loguniform": [1e-4, 1e-2]}}},
    "training": {"stages": [{"name": "all", "train": "all", "epochs": 1}]},
    "resources": {"train_threads": 1},
    "export": {"enabled": False},
}


@pytest.mark.pipeline
def test_a_dry_run_shows_the_first_round_and_a_two_objective_run_trains_every_round(tmp_path, study_file):
    path = study_file({**TINY_TPE, "search": {**TINY_TPE["search"], "metric": ["val_accuracy", "train_time_s"]}})
    dry = snakemake(tmp_path, "-n", "--configfile", str(path))
    counts = job_counts(dry.stdout)
    assert counts["train"] == 2 and counts["tpe_round"] == 1
    assert "round 0 is drawn at random, 0 of the 1 later rounds are chosen so far (the rest are decided as " \
           "results arrive)" in dry.stderr
    snakemake(tmp_path, "--cores", "2", "--configfile", str(path))
    summary = pd.read_csv(tmp_path / "results/tpe/tables/summary.csv")
    chosen = json.loads((tmp_path / "results/tpe/search/round-1.json").read_text())
    (drawn,) = chosen["groups"].values()
    assert len(summary) == 4 and {d["lr"] for d in drawn} <= set(summary["lr"])
    storage = JournalStorage(JournalFileBackend(paths.journal_file(tmp_path / "results/tpe/search")))
    (group,) = chosen["groups"]
    told = [trial for trial in optuna.load_study(study_name=group, storage=storage).trials if trial.values]
    times = {round(trial.values[1], 3) for trial in told}  # round 0's cells: their training seconds
    assert len(told) == 2 and times <= set(summary["train_time_s"].round(3)) and min(times) > 0
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "--configfile", str(path)).stdout
    result = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert "4 grid cells, 0 pretrain cells, 4 done" in result.stdout
    assert "1 of the 1 later rounds are chosen so far" in result.stdout


# --- successive halving inside each round -----------------------------------------------------------------


def halved_tpe_config(tmp_path, n=8, per_round=4) -> dict:
    config = tpe_config(tmp_path, n=n, per_round=per_round)
    config["search"].update(halving=True, rungs=[1, 3], keep=0.5)
    config["training"] = {"stages": [{"name": "all", "train": "all", "epochs": 3}]}
    check_config(config)
    return config


def test_each_round_is_halved_on_its_own_ladder_and_pruned_cells_are_told_as_pruned(tmp_path):
    config = halved_tpe_config(tmp_path)
    study = current(config)
    first = study.grid_cells
    assert study.halving.rungs == (1, 3) and {study.halving_round(cell.id) for cell in first} == {0}
    assert str(study.ranking_path(0, 0)).endswith("halving/round-0/rung-0.json")
    pruned = {cell.id: score(cell) - 0.05 for cell in first[:2]}  # what their one rung reached
    for cell in first:
        write_result(study, cell)
        if cell.id in pruned:
            metrics_file = study.cell_dir(cell.id) / paths.METRICS_JSON
            metrics = json.loads(metrics_file.read_text())
            metrics.update(pruned=True, halving={**study.halving.to_dict(), "ranks": [
                {"rung": 0, "rank": 3, "of": 4, "value": pruned[cell.id], "survives": False}]})
            write_json(metrics_file, metrics)
    write_json(study.sampling.round_path(1), choose_round(study, 1, log=lambda m: None))
    study = current(config)
    second = round_cells(study, 1)
    assert len(second) == 4 and {study.halving_round(cell.id) for cell in second} == {1}
    assert sorted(rank_inputs(study, 0, lambda rung: None, round_index=1)["metrics"]) == sorted(
        str(study.rung_dir(cell.id, 0) / paths.METRICS_JSON) for cell in second), "a round ranks its own cells"
    storage = JournalStorage(JournalFileBackend(paths.journal_file(study.sampling.folder)))
    (group,) = cells_by_group(study)
    trials = optuna.load_study(study_name=group, storage=storage).trials
    assert [t.state for t in trials[:4]] == [TrialState.PRUNED] * 2 + [TrialState.COMPLETE] * 2
    for trial, cell in zip(trials[:2], first):
        assert trial.intermediate_values == {1: pytest.approx(pruned[cell.id])}  # step: the rung's budget
        assert trial.value == pytest.approx(pruned[cell.id])


TINY_TPE_HALVED = {**TINY_TPE, "study": "tpe-halved",
                   "search": {**TINY_TPE["search"], "halving": True, "rungs": [1, 2], "keep": 0.5},
                   "training": {"stages": [{"name": "all", "train": "all", "epochs": 2}]}}


@pytest.mark.pipeline
def test_a_halved_tpe_search_ranks_each_round_and_tells_optuna_its_pruned_cells(tmp_path, study_file):
    path = study_file(TINY_TPE_HALVED)
    counts = job_counts(snakemake(tmp_path, "-n", "--configfile", str(path)).stdout)
    assert counts["train_rung"] == 2 and counts["rank_rung"] == 1 and counts["tpe_round"] == 1
    snakemake(tmp_path, "--cores", "2", "--configfile", str(path))
    out = tmp_path / "results/tpe-halved"
    summary = pd.read_csv(out / "tables/summary.csv")
    assert len(summary) == 4 and sorted(summary["pruned"]) == [False, False, True, True]
    for round_index in (0, 1):
        ranking = json.loads((out / f"halving/round-{round_index}/rung-0.json").read_text())
        assert len(ranking["cells"]) == 2 and len(ranking["survivors"]) == 1
    study = current(load_config(path))
    (group,) = cells_by_group(study)
    storage = JournalStorage(JournalFileBackend(paths.journal_file(out / "search")))
    trials = optuna.load_study(study_name=group, storage=storage).trials
    assert sorted(t.state for t in trials[:2]) == sorted([TrialState.COMPLETE, TrialState.PRUNED])
    assert all(list(t.intermediate_values) == [1] for t in trials[:2])  # each was ranked at rung 0 (1 epoch)
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "--configfile", str(path)).stdout
    cells = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", str(path)],
                           capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert cells.stdout.count("rung 0 (pruned)") == 2 and cells.stdout.count("rung 1 (finalist)") == 2, cells.stdout
    assert "each TPE round is halved on its own ladder" in cells.stdout


@pytest.mark.pipeline
def test_later_rounds_wait_for_their_memory_probes_with_several_cells_per_gpu(tmp_path, study_file, monkeypatch):
    """resources.slots_per_gpu: 2 on two fake GPUs: the probes of round 1's cells, unknown before the run, are
    planned once the round is chosen (this machine has no GPU: they measure nothing, and cells take a GPU)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("TLSWEEP_GPUS", "0,1")
    monkeypatch.setenv("TLSWEEP_LOCK_DIR", str(tmp_path / "locks"))
    config = {**TINY_TPE, "study": "tpe-slots", "resources": {"train_threads": 1, "slots_per_gpu": 2},
              "search": {**TINY_TPE["search"], "space": {**TINY_TPE["search"]["space"],
                                                        "batch_size": {"choice": [16, 32]}}}}
    del config["grid"]["batch_size"]
    path = study_file(config)
    snakemake(tmp_path, "--cores", "2", "--configfile", str(path))
    summary = pd.read_csv(tmp_path / "results/tpe-slots/tables/summary.csv")
    assert len(summary) == 4 and set(summary["status"]) == {"ok"}
    study = current(load_config(path))
    probes = tmp_path / "results" / "probes" / probe_key()
    assert {f"{probe_name(probe_spec(cell))}.json" for cell in study.grid_cells} <= \
        {p.name for p in probes.iterdir()}, "every round's cells had their probes"


def test_the_study_reads_no_file_a_poisoned_results_folder_changes_no_cell(tmp_path):
    config = tpe_config(tmp_path / "fresh", optimizer=["sgd", "adam"])
    fresh = [cell.to_json() for cell in build_study(config).grid_cells]  # no results folder at all
    done = run_rounds(config)  # its rounds are chosen and written: the study itself still reads none of them
    assert len(done.grid_cells) == 24
    assert [cell.to_json() for cell in build_study(config).grid_cells] == fresh
    search = Path(paths.search_folder(paths.study_folder(config["results_dir"], config["study"])))
    for round_file in search.glob("round-*.json"):
        round_file.write_text("{not json")  # poisoned
    (search / "round-7.json").write_text('{"groups": "nonsense"}')
    assert [cell.to_json() for cell in build_study(config).grid_cells] == fresh
    with pytest.raises(ValueError):  # the one reader of decisions does read them, and says so
        read_rounds(config)
