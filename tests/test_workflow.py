"""The real workflow: lint, dry-run plans, and a full run of a tiny study to the charts."""

import json
import re

import pandas as pd
import pytest

from conftest import REPO, snakemake, tiny_study
from workflow.study import build_study


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = dry_run_output.split("Job stats:")[1].split("Reasons:")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_lint_reports_nothing(tmp_path):
    for configfile in [REPO / "studies/digits-demo.yaml", None]:
        args = ["--lint"] + (["--configfile", str(configfile)] if configfile else [])
        result = snakemake(REPO, *args)
        assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
        assert "Lints for" not in result.stdout + result.stderr


def test_dry_run_plans_one_train_job_per_cell(tmp_path, study_file):
    config = tiny_study()
    config["grid"]["model"] = ["resnet18", "mobilenet_v2"]
    result = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)))
    # 2 models x 2 batch sizes x 2 optimizers, plus one pretrain cell per model
    assert job_counts(result.stdout) == {"plan": 2, "prepare_shard": 2, "prepare": 2, "train": 8 + 2, "aggregate": 1,
                                         "charts": 1, "all": 1}


def test_demo_study_plan(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "studies/digits-demo.yaml"))
    assert job_counts(result.stdout) == {"plan": 2, "prepare_shard": 2, "prepare": 2, "train": 12 + 2, "aggregate": 1,
                                         "charts": 1, "all": 1}


@pytest.fixture(scope="module")
def finished_tiny_study(tmp_path_factory):
    """Run the tiny study end to end once with `snakemake --cores 2`."""
    workdir = tmp_path_factory.mktemp("tiny")
    configfile = workdir / "tiny.yaml"
    from conftest import write_config

    write_config(configfile, tiny_study())
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    return workdir, configfile, result


def test_end_to_end_summary_table(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    summary = pd.read_csv(workdir / "results/tiny/summary.csv")
    assert len(summary) == 4
    for column in ["cell", "dataset", "model", "resolution", "batch_size", "lr", "optimizer", "freeze", "seed",
                   "weights", "status", "test_accuracy", "test_loss", "epochs_run", "best_epoch",
                   "wall_time_s", "images_per_s"]:
        assert column in summary.columns, column
    assert sorted(zip(summary["batch_size"], summary["optimizer"])) == [(32, "adam"), (32, "sgd"), (64, "adam"), (64, "sgd")]
    assert set(summary["status"]) == {"ok"}
    assert summary["test_accuracy"].between(0, 1).all() and (summary["images_per_s"] > 0).all()
    # the table agrees with each cell's own metrics.json
    for row in summary.itertuples():
        metrics = json.loads((workdir / "results/tiny/cells" / row.cell / "metrics.json").read_text())
        assert metrics["test_accuracy"] == pytest.approx(row.test_accuracy)
        assert metrics["config"]["upstream"] == "digits-0to4/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone"


def test_end_to_end_histories_and_upstream_checkpoint(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    cells = workdir / "results/tiny/cells"
    upstream = cells / "digits-0to4/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone"
    assert (upstream / "best.pt").exists()
    assert pd.read_csv(upstream / "history.csv")["stage"].tolist() == ["scratch", "scratch"]
    summary = pd.read_csv(workdir / "results/tiny/summary.csv")
    for row in summary.itertuples():
        history = pd.read_csv(cells / row.cell / "history.csv")
        assert history["epoch"].tolist() == list(range(1, row.epochs_run + 1))
        assert set(history["stage"]) <= {"head", "finetune"} and history["stage"].iloc[0] == "head"
        log = (workdir / "results/tiny/logs/train" / f"{row.cell}.log").read_text()
        assert "done: status ok" in log
    histories = pd.read_csv(workdir / "results/tiny/histories.csv")
    assert len(histories) == summary["epochs_run"].sum()
    assert histories["best_epoch"].sum() == len(summary)


def test_end_to_end_charts(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    charts = workdir / "results/tiny/charts"
    for name in ["val_accuracy", "test_accuracy"]:
        png = (charts / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        html = (charts / f"{name}.html").read_text()
        assert "vegaEmbed" in html
        assert not re.search(r"<script[^>]+src=[\"']https?://", html), "the HTML must render offline"


def test_finished_study_has_nothing_left_to_do(finished_tiny_study):
    workdir, configfile, _ = finished_tiny_study
    result = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert "Nothing to be done" in result.stdout + result.stderr
