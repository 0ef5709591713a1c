"""Aggregation of hand-written metrics.json and history.csv files: the summary and histories tables."""

import math

import pandas as pd
import pytest

import fakecells
from fakecells import find, make_study, write_cell
from workflow.cli import main
from workflow.results.aggregate import METRICS, collect, labels
from workflow.study.outputs import HISTORY_FORMATS, TABLE_FORMATS, study_tables
from workflow.study.grid import AXES


@pytest.fixture
def mixed_study(tmp_path):
    return fakecells.mixed_study(tmp_path)


def test_summary_has_one_row_per_cell_with_axes_status_and_metrics(mixed_study):
    summary, _ = collect(mixed_study)
    assert list(summary.columns) == ["cell", *AXES, *METRICS]
    assert summary["cell"].tolist() == [cell.id for cell in mixed_study.grid_cells]
    row = summary.set_index(["dataset", "batch_size", "seed"])
    assert row.loc[("d1", 16, 1), "test_accuracy"] == pytest.approx(0.82)
    assert row.loc[("d1", 16, 0), "best_epoch"] == 3 and row.loc[("d1", 16, 0), "epochs_run"] == 4
    assert row.loc[("d1", 16, 0), "best_val_loss"] == pytest.approx(1.0)  # val_loss at the best epoch
    assert row.loc[("d1", 16, 0), "peak_memory_mb"] == 512.0 and math.isnan(row.loc[("d1", 16, 1), "peak_memory_mb"])
    assert summary["test_auc"].isna().all() and summary["test_top5_accuracy"].isna().all()  # keys no cell wrote
    assert row.loc[("d1", 64, 2), "status"] == "diverged" and row.loc[("d1", 64, 2), "diverged_epoch"] == 3
    assert row.loc[("d2", 16, 0), "status"] == "oom" and math.isnan(row.loc[("d2", 16, 0), "test_accuracy"])
    assert row.loc[("d2", 16, 1), "status"] == "failed"
    assert row.loc[("d2", 16, 1), "error"] == "no metrics.json; the log ends: RuntimeError: boom"
    assert row.loc[("d2", 16, 2), "status"] == "failed"
    assert row.loc[("d2", 16, 2), "error"] == "no metrics.json and no log: not run"
    assert summary["status"].value_counts().to_dict() == {"ok": 8, "failed": 2, "diverged": 1, "oom": 1}
    assert str(summary["epochs_run"].dtype) == "Int64" and summary["lr"].tolist() == [0.01] * 12


def test_histories_keep_per_epoch_lr_and_mark_best_and_stopping_epochs(mixed_study):
    summary, histories = collect(mixed_study)
    assert len(histories) == summary["epochs_run"].sum()  # the OOM cell has no history, failed cells none
    cell = find(mixed_study, dataset="d1", batch_size=16, seed=0).id
    run = histories[histories["cell"] == cell]
    assert run["epoch"].tolist() == [1, 2, 3, 4]
    assert run["best"].tolist() == [False, False, True, False]
    assert run["stopped"].tolist() == [False, False, False, True]
    assert run["lr"].tolist() == [0.01] * 4 and run["epoch_lr"].tolist() == [0.01, 0.01, 0.0001, 0.0001]
    assert run["stage_train"].tolist() == ["head", "head", "all", "all"]
    assert set(AXES) <= set(histories.columns)


def test_swept_training_key_is_an_extra_axis(tmp_path):
    study = make_study(tmp_path, training={"dropout": [0.5, 0.2]})
    for cell in study.grid_cells:
        write_cell(study, cell)
    summary, histories = collect(study)
    assert "dropout" in summary.columns and "dropout" in histories.columns
    assert sorted(summary["dropout"]) == [0.2, 0.5]  # the study's own 0.5 appears although the id omits it
    assert summary.columns.get_loc("dropout") < summary.columns.get_loc("status")


def test_labels_name_only_the_given_axes():
    frame = pd.DataFrame({"lr": [0.001, 0.0003], "optimizer": ["sgd", "adam"]})
    assert labels(frame, ["optimizer", "lr"]).tolist() == ["optimizer=sgd lr=1e-3", "optimizer=adam lr=3e-4"]
    assert labels(frame, [], empty="-").tolist() == ["-", "-"]


def test_aggregate_command_writes_every_planned_table_readably(mixed_study, tmp_path, study_file):
    from fakecells import study_config

    config = study_file(study_config(tmp_path, dataset=["d1", "d2"], batch_size=[16, 64], seed=[0, 1, 2]))
    assert main(["aggregate", "--configfile", str(config)]) == 0
    tables = mixed_study.out / "tables"
    names = study_tables(mixed_study)
    assert names == ["summary", "best", "configs", "batch_size"]
    written = sorted(path.name for path in tables.iterdir())
    assert written == sorted([f"{n}.{ext}" for n in names for ext in TABLE_FORMATS] +
                             [f"histories.{ext}" for ext in HISTORY_FORMATS])
    for name in names:
        csv = pd.read_csv(tables / f"{name}.csv")
        parquet = pd.read_parquet(tables / f"{name}.parquet")
        assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv) > 0
        markdown = (tables / f"{name}.md").read_text().splitlines()
        if name in ("summary", "best"):  # the cells not ok, the recommendation (and for best the warnings) first
            assert markdown[0].startswith("> **Warning: 4 of 12 cells did not end ok**") and "## Recommendation" in markdown
            markdown = markdown[next(i for i, line in enumerate(markdown) if line.startswith("|")):]
        assert len(markdown) == len(csv) + 2  # header, separator, one line per row
        shown = [column for column in csv.columns if csv[column].notna().any()]  # not the columns empty in every row
        assert [cell.strip() for cell in markdown[0].strip("|").split("|")] == shown
        assert set(markdown[1]) <= set("|:-")
        assert "<table" in (tables / f"{name}.html").read_text()
    summary = pd.read_parquet(tables / "summary.parquet")
    assert summary["status"].tolist() == collect(mixed_study)[0]["status"].tolist()
    assert "| 1e-2 |" in (tables / "summary.md").read_text()  # learning rates stay readable


def test_a_cell_with_a_damaged_metrics_json_or_no_history_is_listed_naming_the_file(mixed_study, tmp_path,
                                                                                       study_file, capsys):
    from fakecells import study_config

    gone, garbled = find(mixed_study, dataset="d1", batch_size=16, seed=0), find(mixed_study, dataset="d1",
                                                                                  batch_size=16, seed=1)
    (mixed_study.cell_dir(gone.id) / "history.csv").unlink()
    metrics = mixed_study.cell_dir(garbled.id) / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])  # cut short
    config = study_file(study_config(tmp_path, dataset=["d1", "d2"], batch_size=[16, 64], seed=[0, 1, 2]))
    assert main(["aggregate", "--configfile", str(config)]) == 0  # the tables are written
    summary = pd.read_csv(mixed_study.out / "tables" / "summary.csv").set_index("cell")
    assert len(summary) == 12  # no cell vanished
    assert summary.loc[gone.id, "status"] == "damaged"
    assert str(mixed_study.cell_dir(gone.id) / "history.csv") in summary.loc[gone.id, "error"]
    assert summary.loc[garbled.id, "status"] == "damaged"
    assert f"{metrics} is damaged (JSONDecodeError" in summary.loc[garbled.id, "error"]
    histories = pd.read_csv(mixed_study.out / "tables" / "histories.csv")
    assert gone.id not in set(histories["cell"])  # no curves from a file that is not there
    out = capsys.readouterr().out
    assert f"warning: {metrics} is damaged" in out
