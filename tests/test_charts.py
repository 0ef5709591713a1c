"""Every chart is a valid Vega-Lite spec with data in it, and renders to a non-empty PNG."""

import json
import re

import jsonschema
import numpy as np
import pytest
import vl_convert
from altair.vegalite.v6.schema import core as vegalite

from fakecells import make_study, study_config, write_cell
from workflow.cli import main
from workflow.results.aggregate import collect
from workflow.results.charts import CHARTS, pareto_front
from workflow.study.outputs import CHART_FORMATS, study_charts

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def vegalite_schema():
    schema = vegalite.load_schema()
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.fixture(scope="module")
def rich_study(tmp_path_factory):
    """A grid that varies every axis a chart needs, with a diverged cell, its summary and histories."""
    study = make_study(tmp_path_factory.mktemp("rich"), batch_size=[16, 64], lr=[1e-3, 1e-2], optimizer=["sgd", "adam"],
                       train=["head", "last:2", "all"], seed=[0, 1])
    rng = np.random.default_rng(0)
    for i, cell in enumerate(study.grid_cells):
        if i in (4, 5):  # both seeds of one combination
            write_cell(study, cell, status="diverged", test_accuracy=0.2, epochs=1)
        else:
            write_cell(study, cell, test_accuracy=0.6 + 0.3 * rng.random(), epochs=int(rng.integers(3, 7)),
                       best_epoch=2, train_time_s=float(rng.uniform(10, 100)))
    summary, histories = collect(study)
    return study, summary, histories


GRID_CHARTS = [name for name in CHARTS if name != "halving"]  # halving studies: tests/test_halving.py


def test_the_rich_study_plans_every_chart(rich_study):
    study, _, _ = rich_study
    assert study_charts(study) == GRID_CHARTS


@pytest.mark.parametrize("name", GRID_CHARTS)
def test_chart_spec_is_valid_vega_lite_with_data_and_renders(name, rich_study, vegalite_schema):
    _, summary, histories = rich_study
    spec = CHARTS[name](summary, histories).to_dict()
    vegalite_schema.validate(spec)
    assert spec["datasets"] and all(len(rows) > 0 for rows in spec["datasets"].values())
    assert "text" not in json.dumps(spec.get("mark", "")), "not the placeholder"
    png = vl_convert.vegalite_to_png(spec)
    assert png.startswith(PNG) and len(png) > 10_000


def test_chart_without_finished_runs_says_so(tmp_path, vegalite_schema):
    study = make_study(tmp_path, batch_size=[16, 64], optimizer=["sgd", "adam"], train=["head", "last:2"])
    for cell in study.grid_cells:
        write_cell(study, cell, status="diverged", test_accuracy=0.1, epochs=0)
    summary, histories = collect(study)
    assert histories.empty
    for name in study_charts(study):
        spec = CHARTS[name](summary, histories).to_dict()
        vegalite_schema.validate(spec)
        assert spec["mark"]["type"] == "text" and spec["datasets"]


def test_charts_command_writes_offline_html_png_and_svg(tmp_path, study_file):
    config = study_config(tmp_path, batch_size=[16, 64])
    study = make_study(tmp_path, batch_size=[16, 64])
    write_cell(study, study.grid_cells[0], test_accuracy=0.8)
    write_cell(study, study.grid_cells[1], status="oom", test_accuracy=None, epochs=0)
    path = study_file(config)
    assert main(["aggregate", "--configfile", str(path)]) == 0
    assert main(["charts", "--configfile", str(path)]) == 0
    names = study_charts(study)
    assert names == ["val_accuracy", "test_accuracy", "accuracy_vs_time"]
    charts = study.out / "charts"
    assert sorted(p.name for p in charts.iterdir()) == sorted(f"{n}.{ext}" for n in names for ext in CHART_FORMATS)
    for name in names:
        html = (charts / f"{name}.html").read_text()
        assert "vegaEmbed" in html and not re.search(r"<script[^>]+src=[\"']https?://", html)
        assert (charts / f"{name}.png").read_bytes().startswith(PNG)
        assert (charts / f"{name}.svg").read_text().lstrip().startswith("<svg")


def test_pareto_front_keeps_the_runs_nothing_beats_on_time_and_score():
    times = np.array([10.0, 20.0, 15.0, 30.0, 20.0, 5.0])
    scores = np.array([0.80, 0.90, 0.70, 0.85, 0.90, 0.60])
    # 5 s is fastest; 10 s beats it; 15 s is worse than 10 s; one of the equal 20 s runs; 30 s is slower and worse
    assert pareto_front(times, scores).tolist() == [True, True, False, False, False, True]
