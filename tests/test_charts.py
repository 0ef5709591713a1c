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
from workflow.results.charts import CHARTS
from workflow.results.metric_charts import pareto_front
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


def marks(spec) -> list[tuple[str, dict, dict]]:
    """Every (mark type, encoding, the whole unit spec) in a Vega-Lite spec, layers and facets included."""
    found = []
    if isinstance(spec, dict):
        if "mark" in spec:
            mark = spec["mark"]["type"] if isinstance(spec["mark"], dict) else spec["mark"]
            found.append((mark, spec.get("encoding", {}), spec))
        for value in spec.values():
            found += marks(value)
    elif isinstance(spec, list):
        for value in spec:
            found += marks(value)
    return found


def title_text(spec) -> str:
    title = spec["title"]
    return " ".join([title["text"], *title.get("subtitle", [])]) if isinstance(title, dict) else title


@pytest.fixture(scope="module")
def measured_study(tmp_path_factory):
    """The rich study's grid with predictions.npz in every finished cell (135 validation and test images)."""
    from fakepredictions import mask, write_run
    from workflow.results.publish import aggregate_study

    study = make_study(tmp_path_factory.mktemp("measured"), batch_size=[16, 64], lr=[1e-3, 1e-2],
                       optimizer=["sgd", "adam"], train=["head", "last:2", "all"], seed=[0, 1])
    rng = np.random.default_rng(1)
    for i, cell in enumerate(study.grid_cells):
        if i in (4, 5):
            write_cell(study, cell, status="diverged", test_accuracy=0.2, epochs=1)
        else:
            write_run(study, cell, mask(135, int(rng.integers(80, 130))), mask(135, int(rng.integers(90, 130))),
                      epochs=int(rng.integers(3, 7)), best_epoch=2, train_time_s=float(rng.uniform(10, 100)))
    tables = aggregate_study(study, log=lambda message: None)
    return tables["summary"], collect(study)[1]


@pytest.mark.parametrize("name, says", [
    ("val_accuracy", "one line per run (not averaged)"), ("train_curves", "one line per run (not averaged)"),
    ("test_accuracy", "mean over 2 seeds"), ("lr_batch_heatmap", "mean over 2 seeds"),
    ("trainable_layers", "mean over 2 seeds per configuration"), ("accuracy_vs_time", "one dot per run (not averaged)"),
    ("configs", "mean over 2 seeds")])
def test_every_chart_says_what_it_draws_and_averages(name, says, measured_study):
    spec = CHARTS[name](*measured_study).to_dict()
    assert says in title_text(spec)
    axis_titles = [encoding[channel]["title"] for _, encoding, _ in marks(spec) for channel in ("x", "y", "color")
                   if isinstance(encoding.get(channel), dict) and encoding[channel].get("title")]
    assert axis_titles and not [text for text in axis_titles if "_" in text], axis_titles  # words, not columns


@pytest.mark.parametrize("name, mark, low, high", [
    ("val_accuracy", "area", "val_accuracy_low", "val_accuracy_high"), ("test_accuracy", "rule", "test_low", "test_high"),
    ("trainable_layers", "rule", "test_accuracy_low", "test_accuracy_high"),
    ("accuracy_vs_time", "rule", "test_accuracy_low", "test_accuracy_high"), ("configs", "rule", "test_low", "test_high")])
def test_metrics_are_drawn_with_their_intervals(name, mark, low, high, measured_study):
    spec = CHARTS[name](*measured_study).to_dict()
    errors = [encoding for kind, encoding, _ in marks(spec) if kind == mark and
              high in json.dumps(encoding.get("y2", encoding.get("x2", {})))]
    assert errors and low in json.dumps(errors[0])
    rows = [row for rows in spec["datasets"].values() for row in rows if row.get(high) is not None]
    assert rows and all(row[low] <= row[high] for row in rows)


def test_heatmap_squares_carry_their_interval(measured_study):
    spec = CHARTS["lr_batch_heatmap"](*measured_study).to_dict()
    texts = [row["text"] for rows in spec["datasets"].values() for row in rows if "text" in row]
    assert any(re.fullmatch(r"0\.\d{3}\n\[0\.\d\d, [01]\.\d\d\]", text) for text in texts), texts
    assert "diverged" in texts  # both seeds of one combination diverged


def test_curves_mark_where_the_next_stage_starts(measured_study):
    for name in ("val_accuracy", "train_curves"):
        spec = CHARTS[name](*measured_study).to_dict()
        rules = [unit for kind, encoding, unit in marks(spec) if kind == "rule" and encoding["x"]["field"] == "boundary"]
        assert rules and "stage_start" in json.dumps(rules[0]["transform"])
        starts = [row for rows in spec["datasets"].values() for row in rows if row.get("stage_start")]
        assert starts and {row["stage_change"] for row in starts} == {"head → finetune"}
        assert {row["boundary"] for row in starts} == {2.5}  # write_cell: head for epochs 1-2


def test_loss_axes_turn_logarithmic_when_losses_span_orders_of_magnitude(measured_study):
    summary, histories = measured_study
    def loss_scale(frame):
        spec = CHARTS["train_curves"](summary, frame).to_dict()
        (scale,) = [encoding["y"].get("scale", {}) for _, encoding, _ in marks(spec)
                    if encoding.get("y", {}).get("field") == "train_loss"]
        return scale.get("type")
    assert loss_scale(histories) is None  # 2.0 down to 0.33
    exploding = histories.assign(train_loss=histories["train_loss"] * np.where(histories["epoch"] == 1, 1000, 1))
    assert loss_scale(exploding) == "log"


def test_every_line_and_point_gets_a_distinct_hue_and_stacks_become_grids(measured_study):
    val = CHARTS["val_accuracy"](*measured_study).to_dict()
    colour = next(encoding["color"] for kind, encoding, _ in marks(val) if kind == "line")
    assert colour["field"] == "batch_size" and colour["scale"]["scheme"] == "tableau10"  # not shades of blue
    assert val["columns"] == 3 and val["facet"]["field"] == "panel"  # 12 panels in a grid, not a stack
    curves = CHARTS["train_curves"](*measured_study).to_dict()
    line = next(encoding for kind, encoding, _ in marks(curves) if kind == "line")
    assert line["color"]["field"] == "optimizer" and line["strokeDash"]["field"] == "dash"  # 24: beyond 20 hues
    assert CHARTS["configs"](*measured_study).to_dict()["columns"] == 1  # one dataset and model: one panel


def test_accuracy_vs_time_labels_its_points_in_the_image(tmp_path):
    from fakepredictions import mask, write_run

    study = make_study(tmp_path, batch_size=[16, 64], optimizer=["sgd", "adam"])
    for i, cell in enumerate(study.grid_cells):
        write_run(study, cell, mask(135, 100 + 5 * i), mask(135, 110), train_time_s=10.0 + 20 * i)
    spec = CHARTS["accuracy_vs_time"](*collect(study)).to_dict()
    labels = {row["label"] for rows in spec["datasets"].values() for row in rows}
    assert labels == {"sgd bs16", "sgd bs64", "adam bs16", "adam bs64"}
    svg = vl_convert.vegalite_to_svg(spec)  # what the PNG shows
    assert all(label in svg for label in labels)
    curves = CHARTS["train_curves"](*collect(study)).to_dict()
    colour = next(encoding["color"] for kind, encoding, _ in marks(curves) if kind == "line")
    assert colour["field"] == "runs" and colour["scale"]["scheme"] == "tableau10"  # a hue per configuration


def test_configs_chart_takes_rank_and_verdict_from_the_aggregate(measured_study):
    summary, histories = measured_study
    flipped = summary.assign(rank=summary["rank"].max() + 1 - summary["rank"], verdict="worse")
    spec = CHARTS["configs"](flipped, histories).to_dict()
    rows = [row for rows in spec["datasets"].values() for row in rows if "verdict" in row]
    assert {row["verdict"] for row in rows} == {"worse"}
    by_cells = {row["cells"].split()[0]: row["rank"] for row in rows}
    expected = flipped.dropna(subset=["rank"]).set_index("cell")["rank"]
    assert by_cells and all(by_cells[cell] == expected[cell] for cell in by_cells)


def test_charts_command_logs_the_charts_and_tables_to_the_study_run_and_a_broken_store_only_warns(
        tmp_path, study_file, capsys):
    from mlflow.tracking import MlflowClient

    from workflow.study.study_file import job_tracking
    from workflow.track.mlruns import STUDY_TAG

    config = study_config(tmp_path, batch_size=[16, 64]) | {"tracking": {"mlflow": True}}
    study = make_study(tmp_path, batch_size=[16, 64])
    for cell in study.grid_cells:
        write_cell(study, cell, test_accuracy=0.8)
    path = study_file(config)
    assert main(["aggregate", "--configfile", str(path)]) == 0
    assert main(["charts", "--configfile", str(path)]) == 0
    client = MlflowClient(job_tracking(study, config["tracking"])["tracking_uri"])
    experiment = client.get_experiment_by_name(study.name)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study.name}'")
    assert len(runs) == 1
    logged = {a.path for folder in ("charts", "tables") for a in client.list_artifacts(runs[0].info.run_id, folder)}
    assert logged == {f"charts/{p.name}" for p in (study.out / "charts").iterdir()} | \
        {f"tables/{p.name}" for p in (study.out / "tables").iterdir()}
    assert {f"charts/{name}.png" for name in study_charts(study)} <= logged

    config["tracking"]["tracking_uri"] = "nosuchstore://x"
    capsys.readouterr()
    assert main(["charts", "--configfile", str(study_file(config))]) == 0  # tracking never fails the job
    warnings = [line for line in capsys.readouterr().out.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: MLflow study runs are off"), warnings


def test_accuracy_vs_time_labels_only_where_there_is_room(tmp_path):
    """Three runs in one spot (a second apart, the same accuracy) get one label, the run far away its own;
    every run keeps its label in the tooltip."""
    from fakepredictions import mask, write_run

    study = make_study(tmp_path, batch_size=[16, 32, 64, 128])
    for cell, right, seconds in zip(study.grid_cells, [100, 100, 100, 130], [10.0, 11.0, 12.0, 100.0]):
        write_run(study, cell, mask(135, right), mask(135, 110), train_time_s=seconds)
    spec = CHARTS["accuracy_vs_time"](*collect(study)).to_dict()
    rows = [row for rows in spec["datasets"].values() for row in rows if "label" in row]
    labelled = {row["label"] for row in rows if row["labelled"]}
    assert len(rows) == 4 and "bs128" in labelled and len(labelled & {"bs16", "bs32", "bs64"}) == 1, labelled
    assert "labels: each run where there is room" in title_text(spec)
    assert any({"field": "label", "type": "nominal"} in encoding.get("tooltip", [])
               for kind, encoding, _ in marks(spec) if kind == "point")


def test_the_end_of_run_dots_are_in_the_legend(measured_study):
    spec = CHARTS["val_accuracy"](*measured_study).to_dict()
    (dots,) = [(encoding, unit) for kind, encoding, unit in marks(spec) if kind in ("circle", "point")]
    assert dots[0]["shape"]["field"] == "end" and dots[0]["shape"].get("legend", {}) is not None
    ends = {row["end"] for rows in spec["datasets"].values() for row in rows if row.get("end")}
    assert ends == {"where the run stopped"}


def test_stage_rules_are_named_only_where_a_run_changes_stage(tmp_path):
    two = make_study(tmp_path / "two")
    write_cell(two, two.grid_cells[0], epochs=4)  # epochs 1-2 `head`, 3-4 `finetune`
    one = make_study(tmp_path / "one")
    write_cell(one, one.grid_cells[0], epochs=2)  # `head` only
    for name in ("val_accuracy", "train_curves", "regime_curves"):
        assert "head → finetune" in title_text(CHARTS[name](*collect(two)).to_dict()), name
        said = title_text(CHARTS[name](*collect(one)).to_dict())
        assert "→" not in said and "stage starts" not in said, (name, said)
