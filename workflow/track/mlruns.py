"""A cell's MLflow run (`tracking.mlflow`), in the study's experiment and nested under its study
run: params = the cell's axes and training settings, one metric per history column and epoch
(step = epoch), the test metrics and best.pt as an artifact once done. The run is found by its cell
id (tag `tlsweep.cell`), so a resumed or retried cell continues its own run, and epochs it already
logged are not logged again. The default store is a SQLite database under the results folder
(`workflow.study.study_file.job_tracking`), made before any job starts (`workflow.track.study_run`); a
failure warns once and turns the run off, never failing a cell."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path

from workflow.track.guard import guarded
from workflow.track.tensorboard import METRICS, SCALARS, hyperparameters

CELL_TAG, STUDY_TAG = "tlsweep.cell", "tlsweep.study"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store, else the server's choice."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts").as_uri()


@contextlib.contextmanager
def store_lock(uri: str):
    """With a SQLite store, one job at a time opens it (its first opening creates or migrates its tables)
    and looks up or creates the experiment and runs; yields an MlflowClient of the store."""
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        yield MlflowClient(uri)
        return
    store = Path(uri.removeprefix("sqlite:///"))
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{store}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield MlflowClient(uri)  # the client opens the store as it is made


def find_or_create_run(client, experiment_id: str, tag: str, value: str, tags: dict) -> str:
    """The id of the experiment's run tagged `tag` = `value`, created (with `tags`) if there is none."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, tags={tag: value, **tags}).info.run_id


def study_run(client, experiment: str, uri: str) -> tuple[str, str]:
    """The study's experiment id and its parent run's id (tag `tlsweep.study`), each created if there is
    none; call it holding `store_lock(uri)`."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=artifact_location(uri))
    return experiment_id, find_or_create_run(client, experiment_id, STUDY_TAG, experiment,
                                             {"mlflow.runName": experiment})


class CellRun:
    """A cell's MLflow run, written from the training job (`workflow.track.watch.Watch`)."""

    name = "MLflow runs"

    def __init__(self, tracking: dict, cell, out_dir: Path, log=print):
        self.uri, self.experiment = tracking["tracking_uri"], tracking["experiment"]
        self.cell, self.best, self.log, self.on, self.logged = cell, Path(out_dir) / "best.pt", log, False, 0

    @guarded
    def start(self, epochs_done: int) -> None:
        """Find or create the study's experiment and run and the cell's run; log the params."""
        from mlflow.entities import Param

        with store_lock(self.uri) as client:
            self.client = client
            experiment_id, parent = study_run(client, self.experiment, self.uri)
            self.run_id = find_or_create_run(client, experiment_id, CELL_TAG, self.cell.id,
                                             {"mlflow.runName": self.cell.id, "mlflow.parentRunId": parent})
        client.update_run(self.run_id, status="RUNNING")
        client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in hyperparameters(self.cell).items()])
        steps = [m.step for m in client.get_metric_history(self.run_id, SCALARS[0])]
        self.logged = max(steps, default=0)  # epochs an earlier attempt logged

    @guarded
    def epoch(self, row: dict) -> None:
        """One history row's metrics at step = its epoch (unless an earlier attempt logged it)."""
        from mlflow.entities import Metric

        if row["epoch"] <= self.logged:
            return
        self.client.log_batch(self.run_id, metrics=[Metric(name, float(row[name]), 0, row["epoch"])
                                                    for name in SCALARS if row.get(name) is not None])
        self.logged = row["epoch"]

    @guarded
    def close(self, metrics: dict | None) -> None:
        """The finished cell's metrics and best checkpoint (None: it did not finish: KILLED for now)."""
        if metrics is None:
            self.client.set_terminated(self.run_id, status="KILLED")
            return
        for name in METRICS:
            if metrics.get(name) is not None:
                self.client.log_metric(self.run_id, name, metrics[name])
        if self.best.exists():
            self.client.log_artifact(self.run_id, str(self.best))
        self.client.set_terminated(self.run_id, status="FINISHED" if metrics.get("status") == "ok" else "FAILED")
