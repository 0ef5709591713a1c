"""MLflow in a real Snakemake run: two training jobs at once each get their cell's run (the store is
created before any job starts), and the study's run ends when the run does."""

import pytest

from conftest import snakemake, tiny_study, write_config
from workflow.study.config import load_config
from workflow.study.grid import build_study
from workflow.study.study_file import job_tracking
from workflow.track.mlruns import CELL_TAG, STUDY_TAG

pytestmark = pytest.mark.pipeline


def test_two_jobs_at_once_each_log_their_cell_run_and_the_study_run_finishes(tmp_path):
    from mlflow.tracking import MlflowClient

    config = tiny_study("tracked") | {"tracking": {"mlflow": True}, "results_dir": str(tmp_path / "results")}
    del config["pretrain"]  # the grid's first two jobs are the first to open the store, at once
    config["grid"] |= {"weights": ["none"], "optimizer": ["adam"], "lr": [0.001]}  # one epoch from scratch: stable
    config["training"] = {"stages": [{"name": "scratch", "train": "all", "epochs": 1}]}
    configfile = write_config(tmp_path / "tracked.yaml", config)
    result = snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))

    study = build_study(load_config(configfile))
    logs = {cell.id: (study.cell_dir(cell.id) / "train.log").read_text() for cell in study.grid_cells}
    assert not [cell for cell, log in logs.items() if "runs are off" in log], logs
    assert "are off for this job" not in result.stderr
    client = MlflowClient(job_tracking(study, config["tracking"])["tracking_uri"])
    experiment = client.get_experiment_by_name(study.name).experiment_id
    runs = client.search_runs([experiment])
    cells = {run.data.tags.get(CELL_TAG): run for run in runs if CELL_TAG in run.data.tags}
    assert set(cells) == set(study.grid_ids) and all(run.info.status == "FINISHED" for run in cells.values())
    (parent,) = [run for run in runs if STUDY_TAG in run.data.tags]
    assert parent.info.status == "FINISHED"
    assert {run.data.tags["mlflow.parentRunId"] for run in cells.values()} == {parent.info.run_id}
