"""The study's MLflow parent run (`tracking.mlflow`): opened when a Snakemake run starts, before any job
(the Snakefile's `onstart`, which so creates the SQLite store's tables once), FINISHED or FAILED when the
run ends (`onsuccess`, `onerror`), and the study's charts and tables as its artifacts, logged by the charts
job. The run is found by its tag (`workflow.track.mlruns`). A failure warns once and never fails the run
or the job: the files in the study folder remain the source of truth."""

from __future__ import annotations

from pathlib import Path

from workflow.study.study_file import job_tracking
from workflow.track.guard import guarded
from workflow.track.mlruns import store_lock, study_run


class StudyRun:
    """The study's parent run: its status and artifacts (`start` does it all, guarded)."""

    name = "MLflow study runs"

    def __init__(self, tracking: dict, log=print):
        self.uri, self.experiment, self.log, self.on = tracking["tracking_uri"], tracking["experiment"], log, False

    @guarded
    def start(self, status: str | None, folders: dict[str, Path]) -> None:
        """Find or create the run; set its `status` (RUNNING, FINISHED, FAILED; None: leave it) and log
        each folder's files under its artifact path (the keys)."""
        with store_lock(self.uri) as client:
            run_id = study_run(client, self.experiment, self.uri)[1]
        if status == "RUNNING":
            client.update_run(run_id, status=status)
        elif status is not None:
            client.set_terminated(run_id, status=status)
        for artifact_path, folder in folders.items():
            if Path(folder).is_dir():
                client.log_artifacts(run_id, str(folder), artifact_path)


def mark_study_run(study, tracking: dict | None, status: str, log=print) -> None:
    """With `tracking.mlflow` on, set the study's parent run's status (never raises): RUNNING when a
    Snakemake run starts, FINISHED or FAILED when it ends."""
    tracking = job_tracking(study, tracking)
    if tracking.get("mlflow"):
        StudyRun(tracking, log=log).start(status, {})


def log_study_artifacts(study, tracking: dict | None, folders: dict[str, Path], log=print) -> None:
    """With `tracking.mlflow` on, the study's `folders` as artifacts of its parent run (never raises)."""
    tracking = job_tracking(study, tracking)
    if tracking.get("mlflow"):
        StudyRun(tracking, log=log).start(None, folders)
