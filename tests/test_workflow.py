"""The real workflow: lint, dry-run plans, and a full run of a tiny study to the charts."""

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, copy_of_finished_tiny_study, load_study_file, snakemake, tiny_study, write_config
from workflow.results.aggregate import METRICS
from workflow.study.outputs import CHART_FORMATS, TABLE_FORMATS
from workflow.study.config import load_config
from workflow.study.grid import AXES, build_study


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = dry_run_output.split("Job stats:")[1].split("Reasons:")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.mark.pipeline
def test_lint_reports_nothing(tmp_path):
    for configfile in [REPO / "studies/digits-demo.yaml", REPO / "studies/digits-halving.yaml", None]:
        args = ["--lint"] + (["--configfile", str(configfile)] if configfile else [])
        result = snakemake(REPO, *args)
        assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
        assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.pipeline
def test_dry_run_plans_one_train_job_per_cell(tmp_path, study_file):
    config = tiny_study()
    config["grid"]["model"] = ["resnet18", "mobilenet_v2"]
    result = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)))
    # 2 models x 2 batch sizes x 2 optimizers, plus one pretrain cell per model
    assert job_counts(result.stdout) == {"plan": 2, "shard": 2, "manifest": 2, "train": 8,
                                         "train_upstream": 2, "pretrain_tag": 2, "aggregate": 1, "charts": 1,
                                         "export_index": 1, "all": 1}


@pytest.mark.pipeline
def test_dry_run_plans_the_tables_and_charts_the_axes_allow(tmp_path, study_file):
    config = tiny_study()
    config["grid"].update({"lr": [0.01, 0.001], "seed": [0, 1]})
    result = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)))
    planned = set(re.findall(r"results/tiny/(?:tables|charts)/[\w.]+", result.stdout))
    for name in ["summary", "best", "configs", "batch_size", "batch_lr"]:
        assert {f"results/tiny/tables/{name}.{ext}" for ext in TABLE_FORMATS} <= planned, name
    assert "results/tiny/tables/regimes.csv" not in planned
    charts = {"val_accuracy", "test_accuracy", "train_curves", "lr_batch_heatmap", "accuracy_vs_time", "configs"}
    assert {p for p in planned if "/charts/" in p} == {
        f"results/tiny/charts/{name}.{ext}" for name in charts for ext in CHART_FORMATS}


@pytest.mark.pipeline
def test_demo_study_plan(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "studies/digits-demo.yaml"))
    assert job_counts(result.stdout) == {"plan": 2, "shard": 2, "manifest": 2, "train": 12,
                                         "train_upstream": 2, "aggregate": 1, "charts": 1, "export_index": 1, "all": 1,
                                         # the pretrain cells' features (rules/features.smk), scored (`rank`)
                                         "pretrain_tag": 2, "rank_model": 2}


# finished_tiny_study (conftest.py): the tiny study run end to end once per session, read by the tests
# below; the tests that change its folder or may (a report, a forced job, dry runs of other study
# files, kept off the shared folder should a dry run ever write) share a copy of it instead.
@pytest.fixture(scope="module")
def own_tiny_study(finished_tiny_study, tmp_path_factory):
    """A copy of the finished tiny study for this module's tests that change it."""
    return copy_of_finished_tiny_study(finished_tiny_study, tmp_path_factory.mktemp("own") / "tiny")


@pytest.mark.pipeline
def test_end_to_end_summary_table(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    summary = pd.read_csv(workdir / "results/tiny/tables/summary.csv")
    assert len(summary) == 4
    assert list(summary.columns) == ["cell", *AXES, *METRICS]
    assert sorted(zip(summary["batch_size"], summary["optimizer"])) == [(32, "adam"), (32, "sgd"), (64, "adam"), (64, "sgd")]
    assert set(summary["status"]) == {"ok"}
    assert summary["test_accuracy"].between(0, 1).all() and (summary["images_per_s"] > 0).all()
    # the table agrees with each cell's own metrics.json
    for row in summary.itertuples():
        metrics = json.loads((workdir / "results/tiny/cells" / row.cell / "metrics.json").read_text())
        assert metrics["test_accuracy"] == pytest.approx(row.test_accuracy)
        assert metrics["best_val_accuracy"] == pytest.approx(row.best_val_accuracy)
        assert metrics["config"]["upstream"] == "digits-0to4/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone"


@pytest.mark.pipeline
def test_end_to_end_histories_and_upstream_checkpoint(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    cells = workdir / "results/tiny/cells"
    upstream = workdir / "results/tiny/upstream/digits-0to4/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone"
    assert not (cells / "digits-0to4").exists(), "upstream cells have a folder of their own"
    assert (upstream / "best.pt").exists()
    assert pd.read_csv(upstream / "history.csv")["stage"].tolist() == ["scratch", "scratch"]
    summary = pd.read_csv(workdir / "results/tiny/tables/summary.csv")
    for row in summary.itertuples():
        history = pd.read_csv(cells / row.cell / "history.csv")
        assert history["epoch"].tolist() == list(range(1, row.epochs_run + 1))
        assert set(history["stage"]) <= {"head", "finetune"} and history["stage"].iloc[0] == "head"
        log = (workdir / "results/tiny/logs/train" / f"{row.cell}.log").read_text()
        assert "done: status ok" in log
    histories = pd.read_parquet(workdir / "results/tiny/tables/histories.parquet")
    assert len(histories) == summary["epochs_run"].sum()
    assert histories["best"].sum() == len(summary) and histories["stopped"].sum() == len(summary)


@pytest.mark.pipeline
def test_end_to_end_tables(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    tables = workdir / "results/tiny/tables"
    best = pd.read_parquet(tables / "best.parquet")
    summary = pd.read_parquet(tables / "summary.parquet")
    assert len(best) == 1 and best["scope"].iloc[0] == "overall"  # one dataset, one model
    assert best["val_value"].iloc[0] == summary["best_val_accuracy"].max()  # chosen on validation
    assert best["test_low"].iloc[0] <= best["mean"].iloc[0] <= best["test_high"].iloc[0]
    assert (summary["predictions"] == "yes").all()
    assert ((summary["test_accuracy_low"] <= summary["test_accuracy"])
            & (summary["test_accuracy"] <= summary["test_accuracy_high"])).all()
    best_md = (tables / "best.md").read_text()
    assert "## Warnings" in best_md and "seed" in best_md
    batch_size = pd.read_csv(tables / "batch_size.csv")
    assert batch_size["batch_size"].tolist() == [32, 64]
    assert (tables / "batch_size.md").read_text().startswith("|   batch_size |")


@pytest.mark.pipeline
def test_end_to_end_charts(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    charts = workdir / "results/tiny/charts"
    names = ["val_accuracy", "test_accuracy", "train_curves", "accuracy_vs_time"]  # 2 batch sizes, 2 optimizers, 1 seed
    assert sorted(p.name for p in charts.iterdir()) == sorted(f"{n}.{ext}" for n in names for ext in CHART_FORMATS)
    for name in names:
        png = (charts / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        html = (charts / f"{name}.html").read_text()
        assert "vegaEmbed" in html
        assert not re.search(r"<script[^>]+src=[\"']https?://", html), "the HTML must render offline"
        assert "<svg" in (charts / f"{name}.svg").read_text()


@pytest.mark.pipeline
def test_report_is_one_self_contained_file_with_tables_charts_and_rules(own_tiny_study):
    workdir, configfile, _ = own_tiny_study
    snakemake(workdir, "--configfile", str(configfile), "--report", "results/report.html")
    report = (workdir / "results/report.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']https?://", report), "it must work offline"
    for name in ["summary.html", "best.html", "batch_size.html", "val_accuracy.svg", "test_accuracy.svg", "train_curves.svg",
                 "accuracy_vs_time.svg"]:
        assert name in report, name
    assert "Table I of the batch-size paper" in report  # a caption
    assert "Pareto front" in report
    for rule in ["manifest", "train", "train_upstream", "aggregate", "charts"]:  # each described in report/workflow.rst
        assert re.search(rf'literal\\*">{rule}</tt>', report), rule


@pytest.mark.pipeline
def test_end_to_end_export_of_the_recommended_model(finished_tiny_study):
    workdir, _, _ = finished_tiny_study
    export = workdir / "results/tiny/export"
    entries = json.loads((export / "index.json").read_text())["exports"]
    best = pd.read_parquet(workdir / "results/tiny/tables/best.parquet")
    assert len(entries) == len(best) == 1
    folder = export / entries[0]["id"]
    assert entries[0]["cell"].replace("/", "__") == entries[0]["id"]
    assert {p.name for p in folder.iterdir()} >= {"preprocess.json", "model.onnx", "torchscript.pt"}
    preprocess = json.loads((folder / "preprocess.json").read_text())
    assert preprocess["class_names"] == ["5", "6", "7", "8", "9"]
    assert json.dumps(preprocess).count("val_accuracy") >= 1  # what it was chosen on
    assert preprocess["chosen"] == entries[0]["chosen"]  # read by the job from the index, not the command line


@pytest.mark.pipeline
def test_finished_study_has_nothing_left_to_do(finished_tiny_study):
    workdir, configfile, _ = finished_tiny_study
    result = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.pipeline
def test_a_manifest_rebuilt_with_the_same_content_retrains_nothing(own_tiny_study):
    workdir, configfile, _ = own_tiny_study
    manifest = str(load_study_file(configfile).manifest_path("digits-5to9", 16))
    before = (workdir / manifest).read_bytes()
    snakemake(workdir, manifest, "--cores", "1", "--forcerun", "manifest", "--configfile", str(configfile))
    assert (workdir / manifest).read_bytes() == before
    result = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.pipeline
def test_changed_training_parameter_reruns_only_the_cells_it_touches(own_tiny_study, tmp_path):
    workdir, _, _ = own_tiny_study
    from conftest import write_config

    config = tiny_study()
    config["training"]["stages"][1]["epochs"] = 3  # grid cells only: the pretrain cell has stages of its own
    result = snakemake(workdir, "-n", "--configfile", str(write_config(tmp_path / "changed.yaml", config)))
    assert job_counts(result.stdout) == {"train": 4, "aggregate": 1, "charts": 1, "export_index": 1,
                                         "all": 1}
    assert "Params have changed since last execution" in result.stdout


@pytest.mark.pipeline
def test_a_new_axis_value_adds_cells_without_rerunning_finished_ones(own_tiny_study, tmp_path):
    workdir, _, _ = own_tiny_study
    from conftest import write_config

    config = tiny_study()
    config["grid"]["batch_size"].append(16)
    result = snakemake(workdir, "-n", "--configfile", str(write_config(tmp_path / "more.yaml", config)))
    assert job_counts(result.stdout) == {"train": 2, "aggregate": 1, "charts": 1, "export_index": 1,
                                         "all": 1}
    assert result.stdout.count("bs16-") >= 2 and "bs32-lr" not in result.stdout.split("rule aggregate")[0]


def tree_listing(folder: Path, git: bool = False) -> dict[str, str]:
    """Every file of `folder` with its SHA-256: git's working tree (tracked and untracked, not ignored) with
    `git`, else every file but Snakemake's own metadata folder (.snakemake/)."""
    if git:
        names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=folder, check=True,
                               capture_output=True, text=True).stdout.split("\0")
        files = [folder / name for name in names if name and (folder / name).is_file()]
    else:
        files = [path for path in folder.rglob("*") if path.is_file() and ".snakemake" not in path.parts]
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


@pytest.mark.pipeline
def test_a_dry_run_writes_nothing_on_a_fresh_folder_or_a_finished_study(finished_tiny_study, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    configfile = write_config(fresh / "tiny.yaml", tiny_study())
    repository = tree_listing(REPO, git=True)
    for workdir, study in ((fresh, configfile), finished_tiny_study[:2]):
        before = tree_listing(workdir)
        result = snakemake(workdir, "-n", "--configfile", str(study))
        if workdir != fresh:
            assert "Nothing to be done" in result.stdout + result.stderr
        assert tree_listing(workdir) == before, workdir
    assert tree_listing(fresh) == {"tiny.yaml": hashlib.sha256(configfile.read_bytes()).hexdigest()}
    assert tree_listing(REPO, git=True) == repository


@pytest.mark.pipeline
def test_default_study_plans_without_any_data(tmp_path):
    result = snakemake(tmp_path, "-n")  # config.yaml: CIFAR-10/100 x five batch sizes
    counts = job_counts(result.stdout)
    assert counts["train"] == 10 and counts["manifest"] == 2
    for dataset in ("cifar10", "cifar100"):
        for batch_size in (32, 64, 128, 256, 512):
            assert f"results/batch-size-cifar/cells/{dataset}/mobilenet_v2/r160/bs{batch_size}-lr1e-2-rmsprop-all-s0/metrics.json" in result.stdout


@pytest.mark.pipeline
@pytest.mark.parametrize("study", sorted(p.name for p in (REPO / "studies").glob("*.yaml")))
def test_every_ready_study_dry_runs(tmp_path, study):
    (tmp_path / "data" / "my-images").mkdir(parents=True)  # the freezing study's image folder
    config = build_study(load_config(REPO / "studies" / study))
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "studies" / study))
    counts = job_counts(result.stdout)
    assert counts.get("train_upstream", 0) == len(config.cells) - len(config.grid_cells), counts
    if load_config(REPO / "studies" / study).get("rank", {}).get("keep"):  # rank-then-tune: no cell before the choice
        assert "train" not in counts and counts["choose_models"] == 1, counts
    elif config.halving is None:
        assert counts["train"] == len(config.grid_cells), counts
    else:  # grid cells train by rungs, all of them to the first before the first ranking
        assert "train" not in counts, counts
        assert counts["train_rung"] == counts["finish_cell"] == len(config.grid_cells), counts
        assert counts["rank_rung"] == 1, counts
    assert counts["aggregate"] == counts["charts"] == 1


# The job kinds that need the study's settings, each given the study file and the key of what it works on.
STUDY_JOBS = {"plan": "--data-key", "train": "--cell", "train-rung": "--cell", "probe": "--probe",
              "rank-rung": "--rung", "finish-cell": "--cell", "tpe-round": "--round", "aggregate": "",
              "charts": "", "export-index": "", "export": "--id", "features": "--cell",
              "choose-models": ""}


def test_every_job_gets_its_settings_one_way_the_study_file_and_a_key():
    commands = {}
    for rules in sorted((REPO / "rules").glob("*.smk")):
        for block in re.findall(r"shell:\s*\n((?:[ \t]+\S.*\n?)+)", rules.read_text()):
            command = "".join(re.findall(r'"([^"]*)"', block))
            name = re.search(r"python -m workflow ([\w-]+)", command)
            if name:
                commands[name.group(1)] = command
    assert set(STUDY_JOBS) <= set(commands), sorted(commands)
    for name, key in STUDY_JOBS.items():
        assert "--configfile {params.study:q}" in commands[name], commands[name]  # results/<study>/study.yaml
        assert key in commands[name], commands[name]
    for name, command in commands.items():  # no settings as JSON or through a second file on any command line
        # a quoted params value is a path or a URL, never settings
        assert not re.search(r"\{params\.(?!(?:study|out|out_dir|url):q)\w+:q\}", command), command
        assert "--config " not in command, command
        assert "-file" not in command.replace("--configfile {params.study:q}", ""), command
