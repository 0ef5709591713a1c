"""The study's charts and tables as artifacts of its MLflow parent run (`tracking.mlflow`), logged by
the charts job; the run is found by its tag (`workflow.track.mlruns`). A failure warns once and never
fails the job: the files in the study folder remain the source of truth."""

from __future__ import annotations

from pathlib import Path

from workflow.track.guard import guarded
from workflow.track.mlruns import store_lock, study_run


class StudyArtifacts:
    """Uploads folders of the study's files to its parent run (`start` does it all, guarded)."""

    name = "MLflow artifacts"

    def __init__(self, tracking: dict, log=print):
        self.uri, self.experiment, self.log, self.on = tracking["tracking_uri"], tracking["experiment"], log, False

    @guarded
    def start(self, folders: dict[str, Path]) -> None:
        """Log each folder's files under its artifact path (the keys) in the study's parent run."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        with store_lock(self.uri):
            run_id = study_run(client, self.experiment, self.uri)[1]
        for artifact_path, folder in folders.items():
            if Path(folder).is_dir():
                client.log_artifacts(run_id, str(folder), artifact_path)


def log_study_artifacts(study, tracking: dict | None, folders: dict[str, Path], log=print) -> None:
    """With `tracking.mlflow` on, the study's `folders` as artifacts of its parent run (never raises)."""
    from workflow.study.study_file import job_tracking

    tracking = job_tracking(study, tracking)
    if tracking.get("mlflow"):
        StudyArtifacts(tracking, log=log).start(folders)
