"""A sampled search's chart (validation accuracy against each drawn value, log axes where drawn
log-uniform) and table (Optuna's parameter importances), from hand-written cells of a random search."""

import json
import math

import jsonschema
import pytest
import vl_convert
from altair.vegalite.v6.schema import core as vegalite

from fakecells import study_config, write_cell
from test_halving import validated
from workflow.results.aggregate import collect
from workflow.results.publish import aggregate_study
from workflow.results.search_charts import importance_table, search_charts
from workflow.study.grid import build_study
from workflow.study.outputs import chart_files, study_charts, study_tables, table_files

SPACE = {"lr": {"loguniform": [1e-5, 1e-1]}, "training.dropout": {"uniform": [0, 0.5]},
         "batch_size": {"choice": [16, 64]}}


def accuracy(cell) -> float:
    """Depends on the learning rate only (best at 1e-3): dropout and batch size change nothing."""
    return 0.9 - 0.1 * abs(math.log10(cell.lr) + 3)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    config = study_config(tmp_path_factory.mktemp("searched"), optimizer=["sgd", "adam"])
    del config["grid"]["lr"], config["grid"]["batch_size"]
    config["search"] = {"method": "random", "n": 30, "seed": 0, "space": SPACE}
    study = build_study(validated(config))
    for i, cell in enumerate(study.grid_cells):
        status = "failed" if i == 0 else "ok"
        write_cell(study, cell, status=status, best_val_accuracy=accuracy(cell) if status == "ok" else None)
    summary, histories = collect(study)
    return study, summary, histories


def test_a_sampled_search_plans_its_chart_and_table(searched):
    study, _, _ = searched
    assert "search" in study_charts(study) and "importance" in study_tables(study)
    assert any(path.endswith("charts/search.svg") for path in chart_files(study))
    assert any(path.endswith("tables/importance.md") for path in table_files(study))


def test_the_chart_has_a_panel_per_drawn_key_a_log_axis_for_log_uniform_and_renders(searched):
    study, summary, histories = searched
    spec = search_charts(study)["search"](summary, histories).to_dict()
    schema = vegalite.load_schema()
    jsonschema.validators.validator_for(schema)(schema).validate(spec)
    panels = {panel["encoding"]["x"]["title"]: panel["encoding"]["x"] for panel in spec["hconcat"]}
    assert set(panels) == {"lr", "training.dropout", "batch_size"}
    assert panels["lr"]["scale"]["type"] == "log" and panels["training.dropout"]["scale"]["type"] == "linear"
    assert panels["batch_size"]["type"] == "ordinal"
    (rows,) = spec["datasets"].values()
    assert len(rows) == len(study.grid_cells) - 1  # the failed cell has no value
    assert {row["group"] for row in rows} == {"sgd", "adam"}
    assert vl_convert.vegalite_to_png(spec).startswith(b"\x89PNG")


def test_importances_find_the_one_key_that_matters_in_each_group(searched):
    study, summary, _ = searched
    table = importance_table(summary, study.sampling.dimensions)
    assert list(table.columns) == ["group", "parameter", "importance", "cells"]
    for group in ("adam", "sgd"):
        rows = table[table["group"] == group].set_index("parameter")
        assert rows.loc["lr", "importance"] > 0.9 and rows["importance"].sum() == pytest.approx(1)
        assert rows.index[0] == "lr"
    assert set(table[table["group"] == "sgd"]["cells"]) == {29} and set(table[table["group"] == "adam"]["cells"]) == {30}


def test_too_few_finished_cells_leave_the_importances_empty_not_the_table(tmp_path):
    config = study_config(tmp_path)
    del config["grid"]["lr"]
    config["search"] = {"method": "random", "n": 4, "space": {"lr": {"loguniform": [1e-4, 1e-1]}}}
    study = build_study(validated(config))
    for i, cell in enumerate(study.grid_cells):
        write_cell(study, cell, status="ok" if i < 2 else "oom", best_val_accuracy=0.5 + i / 10)
    tables = aggregate_study(study, log=lambda m: None)
    table = tables["importance"]
    assert len(table) == 1 and table["importance"].isna().all() and table["cells"].tolist() == [2]
    assert json.loads(table.to_json(orient="records"))[0]["parameter"] == "lr"
