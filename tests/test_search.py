"""Random search: draws that depend only on the seed and their index, readable ids, the space's checks,
the cells command and dry runs, and successive halving over drawn cells."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from conftest import REPO, snakemake, tiny_study
from fakecells import study_config
from test_halving import validated, write_rung
from test_workflow import job_counts
from workflow.study.config import ConfigError, check_config
from workflow.core.cell import format_lr
from workflow.study.grid import build_study
from workflow.study.sampling import rounded
from workflow.sweep.halving import rank_inputs, rank_rung

SPACE = {"lr": {"loguniform": [1e-5, 1e-1]}, "batch_size": {"choice": [16, 32, 64, 128]},
         "train": {"choice": ["head", "last:2", "all"]}, "training.dropout": {"uniform": [0, 0.5]}}


def random_config(n=10, seed=0, space=None, **search) -> dict:
    """The tiny study (2 + 2 epochs, sgd and adam in the grid) with its batch size and lr drawn, checked."""
    config = tiny_study()
    del config["grid"]["batch_size"], config["grid"]["lr"]
    config["search"] = {"method": "random", "n": n, "seed": seed, "space": space or SPACE, **search}
    check_config(config)
    return config


def drawn(config) -> list[str]:
    return [cell.id for cell in build_study(config).grid_cells]


def test_draws_are_reproducible_and_prefix_stable():
    ten, twenty = drawn(random_config(n=10)), drawn(random_config(n=20))
    assert drawn(random_config(n=10)) == ten and len(set(twenty)) == 40  # 20 draws x (sgd, adam)
    for optimizer in ("sgd", "adam"):  # each grid combination gets the draws in order: n=10 is n=20's start
        assert [i for i in twenty if f"-{optimizer}-" in i][:10] == [i for i in ten if f"-{optimizer}-" in i]
    assert drawn(random_config(n=10, seed=1)) != ten
    # adding a key to the space leaves the other keys' draws alone
    more = build_study(random_config(n=10, space={**SPACE, "training.label_smoothing": {"uniform": [0, 0.2]}}))
    assert [c.lr for c in more.grid_cells] == [c.lr for c in build_study(random_config(n=10)).grid_cells]


def test_drawn_values_are_rounded_as_stored_within_bounds_and_shown_in_the_id():
    study = build_study(random_config(n=50))
    for cell in study.grid_cells:
        assert 1e-5 <= cell.lr <= 1e-1 and cell.lr == rounded(cell.lr) and f"-lr{format_lr(cell.lr)}-" in cell.id
        assert cell.batch_size in (16, 32, 64, 128) and cell.train in ("head", "last:2", "all")
        dropout = cell.params["dropout"]
        assert 0 <= dropout <= 0.5 and dropout == rounded(dropout) and f"-dropout{dropout:g}" in cell.id
        assert cell.training.dropout == dropout
        assert json.loads(cell.to_json())["lr"] == cell.lr  # what the train job gets


def test_log_uniform_draws_spread_evenly_over_the_decades():
    study = build_study(random_config(n=200, space={"lr": {"loguniform": [1e-5, 1e-1]},
                                                    "batch_size": {"int": [8, 64]}}))
    lrs = np.log10([c.lr for c in study.grid_cells if c.optimizer == "sgd"])
    assert scipy.stats.kstest(lrs, scipy.stats.uniform(-5, 4).cdf).pvalue > 0.01
    sizes = [c.batch_size for c in study.grid_cells]
    assert min(sizes) >= 8 and max(sizes) <= 64 and len(set(sizes)) > 30


def test_a_draw_never_repeats_an_earlier_one_while_the_space_has_room():
    ids = drawn(random_config(n=6, space={"batch_size": {"choice": [16, 32, 64]}, "lr": {"choice": [0.1, 0.01]}}))
    assert len(ids) == len(set(ids)) == 12
    # more draws than the space has configurations: equal draws are one cell
    ids = drawn(random_config(n=8, space={"batch_size": {"choice": [16, 32]}, "lr": {"choice": [0.1]}}))
    assert len(ids) == 4


@pytest.mark.parametrize("space, message", [
    ({"lr": {"loguniform": [-1e-3, 1e-1]}}, "search.space.lr.loguniform[0]: -0.001 is less than or equal to the minimum of 0"),
    ({"batch_size": {"choice": []}}, "search.space.batch_size.choice: [] should be non-empty"),
    ({"lr": {"uniform": [0.1, 0.01]}}, "search.space.lr.uniform: the low end must be below the high end, got [0.1, 0.01]"),
    ({"batch_size": {"uniform": [8, 64]}}, "search.space.batch_size: batch_size takes whole numbers"),
    ({"train": {"int": [1, 3]}}, "search.space.train: train takes named values; draw it with choice"),
    ({"model": {"choice": ["resnet18", "lenet"]}}, "search.space.model.choice[1]: unknown model 'lenet'; closest torchvision models"),
    ({"batch_size": {"choice": [16, 0]}}, "search.space.batch_size.choice[1]: 0 is less than the minimum of 1"),
    ({"training.colour": {"uniform": [0, 1]}}, "search.space.training.colour: unknown training key 'colour'"),
    ({"training.dropout": {"uniform": [0, 1.5]}}, "search.space.training.dropout.uniform[1]: 1.5 is greater than the "
                                                  "maximum of 1"),
    ({"colour": {"choice": [1]}}, "search.space: 'colour' does not match"),
    ({"lr": {"between": [0, 1]}}, "search.space.lr: Additional properties are not allowed ('between'"),
])
def test_bad_spaces_name_the_key(space, message):
    with pytest.raises(ConfigError) as error:
        build_study(random_config(space={"batch_size": {"choice": [16]}, "lr": {"choice": [0.1]}, **space}))
    assert message in str(error.value)


def test_a_drawn_axis_replaces_one_grid_value_never_several_and_random_search_needs_n():
    config = random_config()
    config["grid"]["lr"] = [0.1, 0.01]
    with pytest.raises(ConfigError, match="search.space.lr: the grid lists 2 values of lr; list it in the grid or draw"):
        build_study(config)
    config["grid"]["lr"] = [0.1]  # one value (like the schema's default `train: [all]`) gives way to the draws
    assert drawn(config) == drawn(random_config())
    config = tiny_study()
    config["search"] = {"method": "random", "space": {"lr": {"choice": [0.1]}}}
    check_config(config)
    with pytest.raises(ConfigError, match="method 'random' needs `n`"):
        build_study(config)
    with pytest.raises(ConfigError, match="grid.batch_size: required, unless search.space draws it"):
        build_study(random_config(space={"lr": {"choice": [0.1]}}))
    # a plain grid still needs its learning rates
    config = tiny_study()
    del config["grid"]["lr"]
    with pytest.raises(ConfigError, match="grid: 'lr' is a required property"):
        check_config(config)


@pytest.mark.pipeline
def test_the_cells_command_and_a_dry_run_show_the_drawn_cells(tmp_path, study_file):
    config = random_config(n=3)
    path = study_file(config)
    ids = drawn(config)
    result = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines() if line.strip().startswith("digits-5to9/")] == ids
    assert "random search: 3 draws (seed 0) per combination of the grid's axes, of batch_size" in result.stdout
    dry = snakemake(tmp_path, "-n", "--configfile", str(path))
    assert job_counts(dry.stdout)["train"] == 6
    for cell_id in ids:
        assert f"results/tiny/cells/{cell_id}/metrics.json" in dry.stdout


# --- successive halving over drawn cells ---------------------------------------------------------------


def test_halving_over_drawn_cells_prunes_as_the_grids_halving_does(tmp_path):
    search = {"halving": True, "rungs": [1, 3], "keep": 0.5}
    space = {"lr": {"loguniform": [1e-4, 1e-1]}}
    config = {**study_config(tmp_path, optimizer=["sgd", "adam"]), "search": {
        "method": "random", "n": 5, "seed": 3, "space": space, **search}}
    del config["grid"]["lr"]
    sampled = build_study(validated(config))
    assert sampled.halving is not None and len(sampled.grid_cells) == 10
    # the same cells as a grid (its include lists each drawn lr), halved by the same settings
    lrs = sorted({cell.lr for cell in sampled.grid_cells})
    grid = study_config(tmp_path, optimizer=["sgd", "adam"], lr=lrs[:1],
                        include=[{"lr": lr} for lr in lrs[1:]])
    grid = build_study(validated({**grid, "search": {"method": "halving", "rungs": [1, 3], "keep": 0.5}}))
    assert sorted(grid.grid_ids) == sorted(sampled.grid_ids) and grid.halving == sampled.halving

    def val_accuracy(cell):  # best near lr 1e-2; adam a little better than sgd
        return 0.9 - 0.1 * abs(math.log10(cell.lr) + 2) + (0.01 if cell.optimizer == "adam" else 0)

    files = [write_rung(sampled, cell, 0, [val_accuracy(cell)]) for cell in sampled.grid_cells]
    assert sorted(rank_inputs(sampled, 0, None)["metrics"]) == sorted(map(str, files))
    ranking = rank_rung(files, sampled.halving, 0)
    assert ranking == rank_rung(files, grid.halving, 0)
    best = sorted(sampled.grid_cells, key=lambda c: (-val_accuracy(c), c.id))[:5]
    assert set(ranking["survivors"]) == {cell.id for cell in best}


def test_halving_settings_in_a_random_search_need_halving_on(tmp_path):
    config = random_config(rungs=[1, 4])
    with pytest.raises(ConfigError, match="search.rungs: halving settings need `halving: true` in a random search"):
        build_study(config)
    assert build_study(random_config()).halving is None
    halved = build_study(random_config(halving=True))
    assert halved.halving.rungs == (1, 2, 4) and halved.halving.group_by == ("dataset", "model")


@pytest.mark.pipeline
def test_a_dry_run_of_halving_over_drawn_cells_trains_each_to_the_first_rung(tmp_path, study_file):
    config = random_config(n=3, halving=True, rungs=[1, 4], keep=0.5)
    dry = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)))
    counts = job_counts(dry.stdout)
    assert counts["train_rung"] == 6 and counts["rank_rung"] == 1 and "train" not in counts


@pytest.mark.pipeline
def test_a_run_halves_drawn_cells_and_only_the_survivors_train_on(tmp_path, study_file, monkeypatch):
    import pandas as pd

    from workflow.sweep.halving import rank, read_rung

    config = {
        "study": "halved", "datasets": {"digits-5to9": {"source": "digits", "classes": [5, 6, 7, 8, 9]}},
        "grid": {"dataset": ["digits-5to9"], "model": ["resnet18"], "resolution": [16], "batch_size": [32],
                 "optimizer": ["adam"], "weights": ["none"]},
        "search": {"method": "random", "n": 4, "seed": 0, "space": {"lr": {"loguniform": [1e-4, 1e-1]}},
                   "halving": True, "rungs": [1, 2], "keep": 0.5},
        "training": {"stages": [{"name": "all", "train": "all", "epochs": 2}], "deterministic": True},
        "resources": {"train_threads": 1}, "export": {"enabled": False},
    }
    snakemake(tmp_path, "--cores", "2", "--configfile", str(study_file(config)))
    monkeypatch.chdir(tmp_path)  # the study's results are under results/, relative to the run's folder
    check_config(config)
    study = build_study(config)
    ranking = json.loads(study.ranking_path(0).read_text())
    entries = [read_rung(study.rung_dir(cell.id, 0) / "metrics.json", study.halving) for cell in study.grid_cells]
    assert ranking["survivors"] == [e["cell"] for e in rank(entries, study.halving) if e["survives"]]
    assert len(ranking["survivors"]) == 2
    for cell in study.grid_cells:
        assert (study.rung_dir(cell.id, 1) / "metrics.json").exists() == (cell.id in ranking["survivors"])
    summary = pd.read_csv(tmp_path / "results/halved/tables/summary.csv").set_index("cell")
    assert sorted(summary.index) == sorted(c.id for c in study.grid_cells)
    assert {cell: not summary.loc[cell, "pruned"] for cell in summary.index} == \
        {c.id: c.id in ranking["survivors"] for c in study.grid_cells}
