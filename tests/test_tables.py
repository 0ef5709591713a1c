"""The papers' pivot tables from hand-made summaries, and the Markdown writer."""

import json
import math
import re

import pandas as pd
import pytest

import fakecells
from fakecells import make_study, summary_frame, write_cell
from workflow.results.aggregate import collect
from workflow.results.charts import CHARTS
from workflow.results.publish import aggregate_study
from workflow.results.tables import batch_lr_table, batch_size_table, build_tables, markdown, regimes_table


def test_batch_size_table_is_table_one_of_the_batch_size_paper(tmp_path):
    table = batch_size_table(collect(fakecells.mixed_study(tmp_path))[0])
    assert list(table.columns) == ["batch_size", "d1", "d2"]
    assert table["batch_size"].tolist() == [16, 64]
    assert table["d1"].tolist() == pytest.approx([0.82, 0.72])  # means over ok seeds; the diverged one left out
    assert math.isnan(table.loc[0, "d2"]) and table.loc[1, "d2"] == pytest.approx(0.6)  # no bs 16 run finished


def test_batch_size_table_splits_columns_by_other_varying_axes():
    rows = [{"dataset": d, "model": m, "batch_size": b, "test_accuracy": acc}
            for d, m, b, acc in [("c10", "vgg", 32, 0.9), ("c10", "mnv2", 32, 0.8), ("c10", "vgg", 64, 0.7),
                                 ("c10", "mnv2", 64, 0.6)]]
    table = batch_size_table(summary_frame(rows))
    assert list(table.columns) == ["batch_size", "dataset=c10 model=mnv2", "dataset=c10 model=vgg"]
    assert table["dataset=c10 model=vgg"].tolist() == [0.9, 0.7]


def test_batch_lr_table_uses_auc_per_optimizer_in_the_pcam_studys_shape():
    rows = [{"optimizer": opt, "batch_size": b, "lr": lr, "seed": s, "test_accuracy": 0.5,
             "test_auc": base + b / 1000 + s / 100, "status": "diverged" if (opt, b, lr) == ("sgd", 64, 1e-3) else "ok"}
            for opt, base in [("adam", 0.8), ("sgd", 0.7)] for b in (16, 64) for lr in (1e-4, 1e-3) for s in (0, 1)]
    table = batch_lr_table(summary_frame(rows))
    assert list(table.columns) == ["metric", "optimizer", "batch_size", "lr=1e-4", "lr=1e-3"]
    assert table["metric"].unique().tolist() == ["test_auc"]
    assert table[["optimizer", "batch_size"]].values.tolist() == [["adam", 16], ["adam", 64], ["sgd", 16], ["sgd", 64]]
    assert table["lr=1e-4"].tolist() == pytest.approx([0.821, 0.869, 0.721, 0.769])  # mean of seeds 0 and 1
    assert math.isnan(table.loc[3, "lr=1e-3"])  # every sgd/64/1e-3 run diverged


def test_regimes_table_gives_accuracy_and_time_per_regime():
    rows = [{"weights": w, "train": f, "seed": s, "test_accuracy": acc + s / 100, "train_time_s": t, "wall_time_s": t + 1}
            for w, f, acc, t in [("none", "all", 0.70, 300.0), ("imagenet", "head", 0.80, 100.0),
                                 ("imagenet", "all", 0.90, 200.0), ("imagenet", "last:15", 0.85, 150.0)]
            for s in (0, 2)]
    table = regimes_table(summary_frame(rows)).set_index("regime")
    assert sorted(table.index) == ["fine-tuned", "from scratch", "frozen", "last 15 layers"]
    assert table.loc["frozen", "test_accuracy"] == pytest.approx(0.81)
    assert table.loc["from scratch", "test_accuracy_sd"] == pytest.approx(math.sqrt(0.0002))
    assert table.loc["fine-tuned", "mean_train_time_s"] == 200.0 and table.loc["fine-tuned", "n_ok"] == 2
    assert table.loc["last 15 layers", "mean_wall_time_s"] == 151.0


def test_tables_survive_a_study_where_nothing_finished():
    summary = summary_frame([{"status": "failed", "batch_size": b, "lr": lr} for b in (16, 64) for lr in (1e-3, 1e-2)])
    tables = build_tables(["summary", "best", "batch_size", "batch_lr"], summary)
    assert tables["best"].empty
    assert tables["batch_size"]["batch_size"].tolist() == [16, 64]
    assert tables["batch_size"][["dataset=d1 lr=1e-3", "dataset=d1 lr=1e-2"]].isna().all().all()
    assert tables["batch_lr"][["lr=1e-3", "lr=1e-2"]].isna().all().all()
    for table in tables.values():
        markdown(table)


def test_markdown_writes_blanks_and_short_learning_rates():
    text = markdown(pd.DataFrame({"lr": [1e-5, 0.03], "test_accuracy": [0.912345, None], "status": ["ok", "oom"]}))
    assert text.splitlines()[2].split("|")[1:4] == [" 1e-5 ", "          0.9123 ", " ok       "]
    assert text.splitlines()[3].split("|")[1:4] == [" 3e-2 ", "                 ", " oom      "]


def test_integer_axes_print_as_integers_in_every_label_table_and_chart(tmp_path):
    """A row of integer and float axes (batch size, resolution, learning rate) once made pandas write
    `batch_size=16.0`."""
    study = make_study(tmp_path, batch_size=[16, 64], lr=[0.01, 0.001], resolution=[16, 32])
    for i, cell in enumerate(study.grid_cells):
        write_cell(study, cell, test_accuracy=0.5 + i / 100)
    aggregate_study(study, log=lambda message: None)
    tables = study.out / "tables"
    summary, histories = pd.read_parquet(tables / "summary.parquet"), pd.read_parquet(tables / "histories.parquet")
    floats = re.compile(r"\b(?:batch_size=|resolution=|bs|r)\d+\.0\b")
    texts = {name: json.dumps(chart(summary, histories).to_dict()) for name, chart in CHARTS.items()}
    texts |= {path.name: path.read_text() for path in tables.glob("*.md")}
    assert {name: floats.findall(text) for name, text in texts.items() if floats.search(text)} == {}
    assert "resolution=16 batch_size=16 lr=1e-2" in (tables / "best.md").read_text()


def test_markdown_and_html_leave_out_columns_empty_in_every_row_csv_and_parquet_keep_them(tmp_path):
    study = fakecells.mixed_study(tmp_path)
    aggregate_study(study, log=lambda message: None)
    tables = study.out / "tables"
    csv = pd.read_csv(tables / "summary.csv")
    empty = [column for column in csv.columns if csv[column].isna().all()]
    assert {"test_auc", "micro_batch_size", "positive_class"} <= set(empty)
    assert list(pd.read_parquet(tables / "summary.parquet").columns) == list(csv.columns)
    header = (tables / "summary.md").read_text().split("## Summary\n\n")[1].splitlines()[0]
    shown = [name.strip() for name in header.strip("|").split("|")]
    assert shown == [column for column in csv.columns if column not in empty]
    page = (tables / "summary.html").read_text()
    assert "<th>test_accuracy</th>" in page and not [column for column in empty if f"<th>{column}</th>" in page]
