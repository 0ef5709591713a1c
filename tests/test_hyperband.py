"""Hyperband's brackets over drawn cells (`search.brackets`): Hyperband's proportions, prefix-stable
brackets, each bracket starting at its own rung and ranked on its own, its ladder table, a dry run."""

import json
import math
import zlib

import pandas as pd
import pytest

from conftest import snakemake
from test_halving import halving_config, write_rung
from test_search import random_config
from test_workflow import job_counts
from workflow.results.tables import halving_table
from workflow.study.config import ConfigError
from workflow.study.grid import build_study
from workflow.study.halving import Halving, bracket_sequence
from workflow.sweep.halving import finish_cell, finish_inputs, previous_rung_inputs, rank_inputs, rank_rung

LADDER = {"halving": True, "rungs": [1, 2, 4], "keep": 0.5}  # the tiny study trains 4 epochs


def test_bracket_weights_are_hyperbands_and_the_sequence_keeps_them_in_each_period():
    # Hyperband's own example (Li et al. 2018, eta = 3, three rungs): 9, 5 and 3 configurations
    hyperband = Halving(rungs=(2, 6, 18), keep=1 / 3, metric="val_accuracy", group_by=(), brackets=3)
    assert hyperband.bracket_weights() == [9, 5, 3]
    weights = Halving(rungs=(1, 2, 4), keep=0.5, metric="val_accuracy", group_by=(), brackets=3).bracket_weights()
    assert weights == [4, 3, 3]
    sequence = bracket_sequence(weights, 40)
    assert bracket_sequence(weights, 17) == sequence[:17]  # draw i's bracket depends on i alone
    for start in range(0, 40, 10):  # each period of sum(weights) draws: each bracket as often as it weighs
        assert [sequence[start:start + 10].count(b) for b in range(3)] == weights


def test_drawn_cells_keep_their_brackets_when_n_grows_and_one_bracket_changes_nothing(tmp_path):
    small = build_study(random_config(n=10, brackets=3, **LADDER))
    large = build_study(random_config(n=20, brackets=3, **LADDER))
    brackets = {cell.id: cell.bracket for cell in large.grid_cells}
    assert all(brackets[cell.id] == cell.bracket for cell in small.grid_cells)
    assert {cell.bracket for cell in small.grid_cells} == {0, 1, 2}
    assert small.cells[small.grid_cells[0].id].bracket == small.grid_cells[0].bracket
    assert all(json.loads(cell.to_json())["bracket"] == cell.bracket for cell in small.grid_cells)  # in the JSON a job is given
    plain, one = build_study(random_config(n=10, **LADDER)), build_study(random_config(n=10, brackets=1, **LADDER))
    assert [c.to_json() for c in one.grid_cells] == [c.to_json() for c in plain.grid_cells]
    assert one.halving == plain.halving and "brackets" not in one.halving.to_dict()
    assert all("bracket" not in json.loads(c.to_json()) for c in one.grid_cells)


@pytest.mark.parametrize("search, message", [
    ({"brackets": 4, **LADDER}, "search.brackets: 4 brackets, but the ladder has 3 rungs"),
    ({"brackets": 2}, r"search.brackets: halving settings need `halving: true` in a random search"),
    ({"brackets": 0, **LADDER}, "search.brackets"),
])
def test_bad_brackets_name_the_key(search, message):
    with pytest.raises(ConfigError, match=message):
        build_study(random_config(n=4, **search))


def test_a_grid_halving_takes_no_brackets():
    with pytest.raises(ConfigError, match=r"search: \['brackets'\] do not apply to method 'halving'"):
        build_study(halving_config(rungs=[1, 2], brackets=2))


def test_each_bracket_starts_at_its_rung_and_is_ranked_on_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = build_study(random_config(n=20, brackets=3, **LADDER))
    by_bracket = {b: [c for c in study.grid_cells if c.bracket == b] for b in range(3)}
    rankings = {}

    def read(rung):
        return rankings[rung]

    def accuracy(cell):  # a fixed, distinct value per cell
        return 0.5 + zlib.crc32(cell.id.encode()) % 1000 / 4000

    late = by_bracket[1][0]
    assert previous_rung_inputs(study, late.id, 1) == {}  # its first rung trains from the start
    with pytest.raises(ValueError, match="starts at rung 1"):
        previous_rung_inputs(study, late.id, 0)
    for rung in (0, 1):
        files = rank_inputs(study, rung, read)["metrics"]
        of_file = {str(study.rung_dir(c.id, rung) / "metrics.json"): c.id for c in study.grid_cells}
        ids = [of_file[str(f)] for f in files]
        starting = {c.id for c in study.grid_cells if c.bracket == rung}
        assert starting <= set(ids) and set(ids) - starting == set(rankings[rung - 1]["survivors"] if rung else [])
        for cell_id in ids:
            cell = study.cell(cell_id)
            write_rung(study, cell, rung, [accuracy(cell)] * (rung + 1))
        rankings[rung] = rank_rung(files, study.halving, rung)
        study.ranking_path(rung).parent.mkdir(parents=True, exist_ok=True)
        study.ranking_path(rung).write_text(json.dumps(rankings[rung]))
        for bracket in range(rung + 1):  # each bracket keeps its own share
            members = [e for e in rankings[rung]["cells"] if e["group"].get("bracket") == bracket]
            assert members and sum(e["survives"] for e in members) == math.ceil(0.5 * len(members))
    assert len(rankings[0]["cells"]) == len(by_bracket[0])

    pruned = next(e["cell"] for e in rankings[1]["cells"] if e["group"]["bracket"] == 1 and not e["survives"])
    finished = finish_cell(pruned, study.ranking_path(0).parent, study.cell_dir(pruned), study.halving)
    assert (finished["rung"], finished["pruned"], finished["bracket"]) == (1, True, 1)
    assert [place["rung"] for place in finished["halving"]["ranks"]] == [1]
    full = by_bracket[2][0]  # the last rung's bracket: trained to the full budget, never ranked
    assert finish_inputs(study, full.id, read)["rankings"] == []
    write_rung(study, full, 2, [0.6] * 4)
    finished = finish_cell(full.id, study.ranking_path(0).parent, study.cell_dir(full.id), study.halving)
    assert (finished["rung"], finished["pruned"], finished["bracket"]) == (2, False, 2)


def test_the_ladder_table_has_a_row_per_bracket_and_rung():
    summary = pd.DataFrame({"cell": list("abcdef"), "bracket": [0, 0, 0, 1, 1, 2],
                            "rung": [0, 1, 2, 1, 2, 2]}).astype({"bracket": "Int64", "rung": "Int64"})
    histories = pd.DataFrame({"cell": list("aabbbccccdddeeeefff"),
                              "epoch_rung": [0, 0, 0, 1, 1, 0, 1, 2, 2, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]})
    table = halving_table(summary, histories, (1, 2, 4))
    assert table[["bracket", "rung", "cells", "went_on", "stopped"]].values.tolist() == [
        [0, 0, 3, 2, 1], [0, 1, 2, 1, 1], [0, 2, 1, 0, 1], [1, 1, 2, 1, 1], [1, 2, 1, 0, 1], [2, 2, 1, 0, 1]]
    assert table["epochs_trained"].tolist() == [4, 3, 2, 5, 2, 3]


@pytest.mark.pipeline
def test_a_dry_run_plans_the_first_brackets_rung_and_later_brackets_wait_for_the_rankings_before(
        tmp_path, study_file):
    config = random_config(n=10, brackets=3, **LADDER)
    dry = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)))
    counts = job_counts(dry.stdout)
    study = build_study(config)
    first = [cell for cell in study.grid_cells if cell.bracket == 0]
    assert counts["train_rung"] == len(first) and counts["rank_rung"] == 1
    assert all(f"{cell.id}/rung-0/metrics.json" in dry.stdout for cell in first)
    assert "/rung-1/" not in dry.stdout and "/rung-2/" not in dry.stdout
