"""The study's MLflow run as the Snakefile opens and ends it, and a tracking failure's console line."""

import os

from fakecells import make_study
from workflow.study.study_file import job_tracking
from workflow.track.mlruns import STUDY_TAG, CellRun
from workflow.track.study_run import mark_study_run


def study_runs(study, tracking):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(job_tracking(study, tracking)["tracking_uri"])
    experiment = client.get_experiment_by_name(study.name).experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`{STUDY_TAG}` = '{study.name}'")


def test_the_study_run_is_made_when_a_run_starts_and_ends_with_it(tmp_path):
    study, tracking = make_study(tmp_path), {"mlflow": True}
    mark_study_run(study, tracking, "RUNNING")  # onstart: the store, its experiment and run, before any job
    assert (study.results_dir / "mlflow.db").exists()
    (running,) = study_runs(study, tracking)
    assert running.info.status == "RUNNING"
    mark_study_run(study, tracking, "FINISHED")  # onsuccess
    (finished,) = study_runs(study, tracking)
    assert finished.info.run_id == running.info.run_id and finished.info.status == "FINISHED"
    mark_study_run(study, tracking, "RUNNING")  # the next run of the study reopens the same run
    assert [run.info.status for run in study_runs(study, tracking)] == ["RUNNING"]


def test_without_mlflow_the_hooks_make_nothing_and_a_broken_store_only_warns(tmp_path):
    study, messages = make_study(tmp_path), []
    mark_study_run(study, {"mlflow": False}, "RUNNING", log=messages.append)
    assert not (study.results_dir / "mlflow.db").exists() and messages == []
    mark_study_run(study, {"mlflow": True, "tracking_uri": "nosuchstore://x"}, "FAILED", log=messages.append)
    assert len(messages) == 1 and messages[0].startswith("warning: MLflow study runs are off"), messages


def test_a_tracker_turned_off_says_so_on_the_console_too(tmp_path, monkeypatch):
    """A training job's warning reaches Snakemake's stderr (the train rule's fd 3), not only its log."""
    study = make_study(tmp_path)
    cell = study.grid_cells[0]
    read, write = os.pipe()
    monkeypatch.setenv("TLSWEEP_ERROR_FD", str(write))
    messages = []
    tracking = {"mlflow": True, "experiment": study.name, "tracking_uri": "nosuchstore://x"}
    run = CellRun(tracking, cell, tmp_path / "cell", log=messages.append)
    run.start(0)
    run.epoch({"epoch": 1})  # off: nothing more
    os.close(write)
    console = os.read(read, 65536).decode()
    assert len(messages) == 1 and messages[0].startswith("warning: MLflow runs are off for this job:")
    assert console.startswith(f"warning: {cell.id}: MLflow runs are off for this job:") and console.count("\n") == 1
