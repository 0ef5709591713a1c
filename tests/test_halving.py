"""Successive halving's parts: the `search` config, ranking a rung, and a rung continuing its cell's run."""

import json
import math

import pandas as pd
import pytest
import torch

from conftest import REPO, make_cell, tiny_study
from fakecells import HISTORY_COLUMNS, make_study, study_config
from workflow.study.config import ConfigError
from workflow.study.grid import build_study
from workflow.core.paths import LAST_PT, STATE_PT
from workflow.study.halving import DEFAULT_HALVING, Halving
from workflow.sweep.halving import finish_cell, finish_rung, rank, rank_rung, read_rung, start_rung, stopping_rung
from workflow.train.cell import train_cell


def validated(config):
    from snakemake.utils import validate

    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def halving_config(**search):
    """The tiny study (2 + 2 epochs, 4 grid cells; the schema's defaults filled in) searched by halving."""
    return {**validated(tiny_study()), "search": {"method": "halving", **search}}


# --- the search config ------------------------------------------------------------------------------


def test_grid_search_is_the_default_and_changes_no_cell():
    plain = build_study(validated(tiny_study()))
    assert plain.halving is None
    for search in ("grid", {"method": "grid"}):
        study = build_study(validated({**tiny_study(), "search": search}))
        assert study.halving is None and [c.id for c in study.grid_cells] == [c.id for c in plain.grid_cells]


def test_halving_settings_and_their_defaults():
    study = build_study(validated(halving_config(rungs=[1, 2, 4], keep=0.5, metric="val_loss", group_by=["model"])))
    assert study.halving == Halving(rungs=(1, 2, 4), keep=0.5, metric="val_loss", group_by=("model",))
    # the short form takes every default; the ladder ends at the cells' whole training (4 epochs here)
    short = build_study(validated({**tiny_study(), "search": "halving"})).halving
    assert short == Halving(rungs=(1, 2, 4), keep=DEFAULT_HALVING["keep"], metric="val_accuracy",
                            group_by=("dataset", "model"))
    assert set(build_study(validated(halving_config())).cells) == set(build_study(validated(tiny_study())).cells)


@pytest.mark.parametrize("search, message", [
    ({"rungs": [2, 2, 4]}, "search.rungs: budgets must increase strictly, got [2, 2, 4]"),
    ({"rungs": [3, 1]}, "search.rungs: budgets must increase strictly"),
    ({"rungs": [1, 5]}, "search.rungs: the last rung (5 epochs) is more than any grid cell trains (4 epochs, "
                        "all stages together); make it at most 4"),
    ({"keep": 1.0}, "search.keep: the share that goes on must be between 0 and 1, got 1.0"),
    ({"group_by": ["colour"]}, "search.group_by: unknown axes ['colour']"),
    ({"metric": "test_accuracy"}, "search.metric: unknown metric 'test_accuracy'"),
    ({"metric": ["val_accuracy", "train_time_s"]}, "search.metric: unknown metric ['val_accuracy', 'train_time_s']"),
])
def test_bad_halving_settings_name_the_key(search, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        build_study(halving_config(**search))  # (the schema already rejects some of these)


def test_grid_search_takes_no_halving_settings():
    with pytest.raises(ConfigError, match=r"search: \['rungs'\] only apply to method 'halving'"):
        build_study({**validated(tiny_study()), "search": {"method": "grid", "rungs": [1, 2]}})


@pytest.mark.parametrize("search", [
    {"method": "halving", "rungs": [1]}, {"method": "halving", "rungs": [0, 2]}, {"method": "halving", "keep": 0},
    {"method": "halving", "keep": 1}, {"method": "halving", "metric": "test_accuracy"}, {"method": "halving", "eta": 3},
    {"rungs": [1, 2]}, "random",
])
def test_schema_rejects_bad_search_settings(search):
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError):
        validated({**tiny_study(), "search": search})


def test_pretrain_cells_are_not_halved_and_the_ladder_counts_every_stage():
    config = halving_config(rungs=[1, 4])
    config["training"]["stages"][1]["epochs"] = 10  # 2 + 10 epochs: a last rung of 4 stops the finalists there
    study = build_study(config)
    assert study.halving.rungs == (1, 4) and len(study.cells) == len(study.grid_cells) + 1


# --- ranking ----------------------------------------------------------------------------------------


def entry(cell, value, status="ok", group="g"):
    return {"cell": cell, "group": {"model": group}, "status": status, "value": value}


def settings(keep=0.5, metric="val_accuracy"):
    return Halving(rungs=(1, 3, 9), keep=keep, metric=metric, group_by=("model",))


def test_ranking_breaks_ties_by_cell_id_and_keeps_the_best_share():
    ranked = rank([entry("d", 0.9), entry("b", 0.8), entry("c", 0.9), entry("a", 0.8), entry("e", 0.1)], settings())
    assert [(e["cell"], e["rank"], e["survives"]) for e in ranked] == [
        ("c", 1, True), ("d", 2, True), ("a", 3, True), ("b", 4, False), ("e", 5, False)]  # ceil(0.5 x 5) = 3
    assert all(e["of"] == 5 for e in ranked)
    # the same entries in another order rank the same
    assert rank(list(reversed([entry("d", 0.9), entry("b", 0.8), entry("c", 0.9), entry("a", 0.8), entry("e", 0.1)])),
                settings()) == ranked


def test_loss_ranks_lowest_first():
    ranked = rank([entry("a", 0.5), entry("b", 0.2), entry("c", 2.0)], settings(keep=1 / 3, metric="val_loss"))
    assert [(e["cell"], e["survives"]) for e in ranked] == [("b", True), ("a", False), ("c", False)]


@pytest.mark.parametrize("keep, cells, survivors", [
    (1 / 3, 9, 3), (0.333, 9, 3), (1 / 3, 8, 3), (0.5, 4, 2), (0.1, 30, 3), (0.2, 5, 1), (0.01, 3, 1), (0.5, 1, 1),
    (0.5, 0, 0),
])
def test_survivors_are_ceil_of_keep_times_cells_and_at_least_one(keep, cells, survivors):
    assert settings(keep=keep).survivors(cells) == survivors


def test_cells_that_failed_diverged_or_have_no_value_rank_last_and_never_go_on():
    ranked = rank([entry("ok", 0.2), entry("diverged", 0.9, "diverged"), entry("failed", None, "failed"),
                   entry("oom", None, "oom")], settings(keep=0.9))
    assert [(e["cell"], e["survives"]) for e in ranked] == [
        ("ok", True), ("diverged", False), ("failed", False), ("oom", False)]


def test_each_group_ranks_on_its_own():
    ranked = rank([entry("a1", 0.9, group="a"), entry("a2", 0.8, group="a"), entry("b1", 0.2, group="b"),
                   entry("b2", 0.1, group="b")], settings(keep=0.5))
    assert {e["cell"] for e in ranked if e["survives"]} == {"a1", "b1"}
    assert [e["rank"] for e in ranked] == [1, 2, 1, 2]


def write_rung(study, cell, rung, val_accuracy: list[float], status="ok", budget=None):
    """A rung's metrics.json and history.csv, written by hand."""
    folder = study.rung_dir(cell.id, rung)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": e, "stage": "s", "train": "all", "lr": 0.01, "train_loss": 1.0, "train_accuracy": 0.5,
             "val_loss": 1 - acc, "val_accuracy": acc, "seconds": 1.0, "images_per_s": 10.0}
            for e, acc in enumerate(val_accuracy, start=1)]
    pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(folder / "history.csv", index=False)
    metrics = {"cell": cell.id, "status": status, "epochs_run": len(rows), "config": json.loads(cell.to_json()), "rung": rung,
               "budget_epochs": budget, "test_accuracy": 0.5}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for name in ("best.pt", STATE_PT):
        (folder / name).write_bytes(b"weights")
    return folder / "metrics.json"


def test_a_rung_is_ranked_from_its_files_and_each_cell_finishes_where_it_stopped(tmp_path):
    study = make_study(tmp_path, lr=[0.1, 0.01, 0.001])
    halving = Halving(rungs=(1, 2), keep=0.5, metric="val_accuracy", group_by=("dataset", "model"))
    high, mid, low = study.grid_cells  # lr 0.1, 0.01, 0.001
    files = [write_rung(study, high, 0, [0.7]), write_rung(study, mid, 0, [0.9]),
             write_rung(study, low, 0, [], status="failed")]
    assert read_rung(files[1], halving)["value"] == 0.9 and read_rung(files[2], halving)["value"] is None
    ranking = rank_rung(files, halving, 0)
    assert ranking["survivors"] == [mid.id, high.id] and ranking["budget_epochs"] == 1
    assert ranking["next_budget_epochs"] == 2 and ranking["metric"] == "val_accuracy"
    study.ranking_path(0).parent.mkdir(parents=True)
    study.ranking_path(0).write_text(json.dumps(ranking))
    with pytest.raises(ValueError, match="only rungs 0 to 0 are ranked"):
        rank_rung(files, halving, 1)

    assert stopping_rung(low.id, [ranking]) == 0 and stopping_rung(mid.id, [ranking]) == 1
    write_rung(study, mid, 1, [0.9, 0.95])
    finished = finish_cell(mid.id, study.ranking_path(0).parent, study.cell_dir(mid.id), halving)
    assert (finished["rung"], finished["budget_epochs"], finished["pruned"]) == (1, 2, False)
    assert finished["halving"]["ranks"] == [{"rank": 1, "of": 3, "value": 0.9, "survives": True, "rung": 0}]
    failed = finish_cell(low.id, study.ranking_path(0).parent, study.cell_dir(low.id), halving)
    assert (failed["rung"], failed["pruned"], failed["status"]) == (0, True, "failed")
    assert json.loads((study.cell_dir(low.id) / "metrics.json").read_text()) == failed
    assert (study.cell_dir(low.id) / "best.pt").read_bytes() == b"weights"


# --- a rung continues its cell's run -----------------------------------------------------------------


def cell():
    return make_cell(training={
        "stages": [{"name": "head", "train": "head", "epochs": 1}, {"name": "all", "train": "cell", "epochs": 2}],
        "early_stopping": {"patience": 5}, "deterministic": True,
    })


def quiet(_):
    pass


def timing_free(folder):
    return pd.read_csv(folder / "history.csv").drop(columns=["seconds", "images_per_s"])


def test_rungs_continue_one_run_and_a_killed_rung_trains_no_earlier_epoch_again(shard, tmp_path):
    """Rung 0 (1 epoch), then rung 1 (3 epochs) killed after its first epoch and rerun as Snakemake does
    (its declared outputs deleted): the result is the uninterrupted 3-epoch run, and the rerun never
    trains epoch 1 again."""
    reference = tmp_path / "reference"
    train_cell(cell(), shard, reference, log=quiet)
    rung0, rung1 = tmp_path / "rung-0", tmp_path / "rung-1"
    start_rung(rung0, None, log=quiet)
    train_cell(cell(), shard, rung0, log=quiet, until_epoch=1)
    assert finish_rung(rung0, 0, 1, log=quiet)["budget_epochs"] == 1
    assert (rung0 / STATE_PT).exists() and not (rung0 / LAST_PT).exists()
    assert timing_free(rung0).equals(timing_free(reference).iloc[:1])

    messages = []
    start_rung(rung1, rung0, log=messages.append)
    assert messages == [f"continuing {rung0 / STATE_PT} after epoch 1"]
    train_cell(cell(), shard, rung1, log=quiet, until_epoch=2)  # "killed" after epoch 2: last.pt stays
    best_epoch = torch.load(rung1 / LAST_PT, weights_only=False)["state"]["best_epoch"]
    for name in ("metrics.json", "history.csv", "best.pt"):  # what Snakemake deletes before it reruns the job
        (rung1 / name).unlink()
    messages = []
    start_rung(rung1, rung0, log=messages.append)
    metrics = train_cell(cell(), shard, rung1, log=quiet, until_epoch=3)
    finish_rung(rung1, 1, 3, log=quiet)
    if best_epoch <= 1:  # the best checkpoint is still rung 0's: the killed run goes on
        assert messages == [f"continuing this rung's own {LAST_PT} after epoch 2"]
        assert metrics["run"]["resumed_after_epochs"] == [1, 2]
    else:  # epoch 2's best.pt was deleted with the outputs: back to rung 0's state, never to scratch
        assert messages == [f"continuing {rung0 / STATE_PT} after epoch 1"]
        assert metrics["run"]["resumed_after_epochs"] == [1]
    expected = json.loads((reference / "metrics.json").read_text())
    assert timing_free(rung1).equals(timing_free(reference))  # epochs 1..3, no gap, no repeat
    for key in ("best_epoch", "best_val_accuracy", "test_accuracy", "status"):
        assert metrics[key] == expected[key], key
    assert torch.load(rung1 / "best.pt", weights_only=False)["epoch"] == expected["best_epoch"]


def test_a_cell_that_is_not_ok_goes_on_to_no_rung(tmp_path):
    rung0 = tmp_path / "rung-0"
    rung0.mkdir()
    (rung0 / "metrics.json").write_text(json.dumps({"cell": "c", "status": "diverged", "epochs_run": 1}))
    (rung0 / LAST_PT).write_bytes(b"stale")
    finish_rung(rung0, 0, 1, log=quiet)
    assert not (rung0 / LAST_PT).exists()
    assert torch.load(rung0 / STATE_PT, weights_only=False) == {"resumable": False, "status": "diverged", "cell": "c"}
    with pytest.raises(ValueError, match="holds no resumable state \\(the cell ended as 'diverged'\\)"):
        start_rung(tmp_path / "rung-1", rung0, log=quiet)


def test_cells_command_shows_rungs_and_where_cells_stopped(tmp_path, study_file):
    import subprocess
    import sys

    config = {**study_config(tmp_path, lr=[0.1, 0.01]), "search": {"method": "halving", "rungs": [1, 3], "keep": 0.5}}
    study = build_study(config)
    files = [write_rung(study, c, 0, [acc]) for c, acc in zip(study.grid_cells, [0.5, 0.6])]
    study.ranking_path(0).parent.mkdir(parents=True)
    study.ranking_path(0).write_text(json.dumps(rank_rung(files, study.halving, 0)))
    result = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", str(study_file(config))],
                            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("d1/")}
    assert lines[study.grid_cells[0].id].split()[-4:] == ["1/2", "rung", "0", "(pruned)"]
    assert lines[study.grid_cells[1].id].split()[-4:] == ["1/2", "rung", "1", "(finalist)"]
    assert "successive halving: rungs [1, 3] epochs, keep 0.5 of each dataset x model by val_accuracy" in result.stdout
    assert math.isclose(DEFAULT_HALVING["keep"], 1 / 3)


# --- tables and charts ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def halved_study(tmp_path_factory):
    """8 hand-written cells of a halving study (rungs 1, 2, 4 epochs): 4 pruned at rung 0, 2 at rung 1,
    2 finalists, and one cell that never finished its first rung."""
    from fakecells import write_cell

    tmp = tmp_path_factory.mktemp("halved")
    config = {**study_config(tmp, batch_size=[16, 64], optimizer=["sgd", "adam"], train=["head", "last:2"],
                             seed=[0, 1]),
              "search": {"method": "halving", "rungs": [1, 2, 4], "keep": 0.5}}
    study = build_study(config)
    stops = [0, 0, 0, 0, 1, 1, 2, 2] + [None] * (len(study.grid_cells) - 9) + [None]
    for i, (cell, rung) in enumerate(zip(study.grid_cells, stops)):
        if rung is None:
            continue
        budget = study.halving.rungs[rung]
        write_cell(study, cell, test_accuracy=0.9 - 0.05 * i, epochs=budget, best_epoch=1, train_time_s=5.0 * budget,
                   rung=rung, budget_epochs=budget, pruned=rung < study.halving.last)
    unfinished = study.grid_cells[8]
    log = study.out / "logs/train" / unfinished.id / "rung-0.log"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1 (head): ...\nKilled\n")
    return study


def test_the_summary_and_histories_say_where_each_cell_stopped(halved_study):
    from workflow.results.aggregate import HALVING_COLUMNS, METRICS, collect
    from workflow.study.grid import AXES

    summary, histories = collect(halved_study)
    assert list(summary.columns) == ["cell", *AXES, *METRICS, *HALVING_COLUMNS]
    assert summary["rung"].tolist()[:9] == [0, 0, 0, 0, 1, 1, 2, 2, pd.NA]
    assert summary["budget_epochs"].tolist()[:8] == [1, 1, 1, 1, 2, 2, 4, 4]
    assert summary["pruned"].tolist()[:9] == [True] * 6 + [False] * 2 + [pd.NA]
    assert str(summary["rung"].dtype) == "Int64" and str(summary["pruned"].dtype) == "boolean"
    unfinished = summary.iloc[8]
    assert unfinished["status"] == "failed" and unfinished["error"] == "no metrics.json; the log ends: Killed"
    finalist = histories[histories["cell"] == halved_study.grid_cells[7].id]
    assert finalist["epoch_rung"].tolist() == [0, 1, 2, 2] and finalist["rung_budget"].tolist() == [1, 2, 4, 4]
    assert not finalist["pruned"].any() and histories[histories["cell"] == halved_study.grid_cells[0].id]["pruned"].all()


def test_the_ladder_table_and_a_best_configuration_among_the_finalists(halved_study):
    from workflow.results.aggregate import collect
    from workflow.results.tables import build_tables

    summary, histories = collect(halved_study)
    tables = build_tables(["best", "configs", "halving"], summary, histories, halved_study.halving.rungs)
    ladder = tables["halving"]
    assert ladder.to_dict("list") == {"rung": [0, 1, 2], "budget_epochs": [1, 2, 4], "cells": [8, 4, 2],
                                      "went_on": [4, 2, 0], "stopped": [4, 2, 2], "epochs_trained": [8, 4, 4]}
    # pruned cells stopped at smaller budgets: the best configuration is the finalists' (cells 6 and 7, the
    # two seeds of one configuration) although the pruned cells have higher test accuracies here
    finalists = summary[summary["pruned"] == False]  # noqa: E712
    assert len(finalists) == 2 and tables["configs"]["n_ok"].sum() == 2
    assert tables["best"]["mean"].iloc[0] == pytest.approx(finalists["test_accuracy"].mean())
    assert tables["best"]["mean"].iloc[0] < summary["test_accuracy"].max()


def test_every_chart_of_a_halving_study_is_valid_renders_and_marks_pruned_runs(halved_study):
    import jsonschema
    import vl_convert
    from altair.vegalite.v6.schema import core as vegalite

    from workflow.results.aggregate import collect
    from workflow.results.chartkit import PRUNED
    from workflow.results.charts import CHARTS
    from workflow.study.outputs import study_charts

    schema = vegalite.load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    summary, histories = collect(halved_study)
    names = study_charts(halved_study)
    assert {"val_accuracy", "train_curves", "trainable_layers", "accuracy_vs_time", "halving"} <= set(names)
    for name in names:
        spec = CHARTS[name](summary, histories).to_dict()
        validator.validate(spec)
        assert vl_convert.vegalite_to_png(spec).startswith(b"\x89PNG"), name
        if name in ("val_accuracy", "train_curves", "trainable_layers", "accuracy_vs_time", "halving"):
            text = json.dumps(spec)
            assert PRUNED in text and "finalist" in text and "pruned" in text, name
