"""The files jobs read their settings from, so that their command lines stay short.

The Snakefile writes <cell folder>/cell.json when it plans a cell's training job: the resolved cell
(workflow.study.grid.Cell.to_dict) and the study's `tracking` settings; <data folder>/<dataset>/dataset.json,
the dataset's resolved entry its plan job reads; and <study folder>/config.yaml,
the validated config the results jobs (aggregate, charts) read. Each is rewritten only when its
content changes. Imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from workflow.atomic import atomic_path, write_json
from workflow.core import paths


class JobFileError(ValueError):
    """A cell file that is missing, unreadable or for another cell."""


def write_if_changed(path: str | Path, content) -> str:
    """Write `content` as JSON at `path` unless the file already holds it; return the path."""
    try:
        if json.loads(Path(path).read_text()) == json.loads(json.dumps(content)):
            return str(path)
    except (OSError, ValueError):
        pass  # none yet, or a damaged one: write it
    write_json(path, content)
    return str(path)


def job_tracking(study, tracking: dict | None) -> dict:
    """The study's tracking settings as its jobs use them: with MLflow on, the experiment (the study's
    name) and the store (default: SQLite, <results_dir>/mlflow.db)."""
    tracking = dict(tracking or {})
    if tracking.get("mlflow"):
        tracking["experiment"] = study.name
        tracking["tracking_uri"] = tracking.get("tracking_uri") or \
            f"sqlite:///{Path(study.results_dir).resolve() / paths.MLFLOW_DB}"
    return tracking


def write_job_file(study, cell_id: str, tracking: dict | None) -> str:
    """Write `cell_id`'s cell file (if its content changed) and return its path."""
    content = {"study": study.name, "cell": study.cell(cell_id).to_dict(), "tracking": job_tracking(study, tracking)}
    return write_if_changed(paths.cell_job_file(study.cell_dir(cell_id)), content)


def write_dataset_file(study, dataset: str) -> str:
    """Write `dataset`'s resolved config entry beside its plan (if it changed) for its plan job; return
    its path."""
    return write_if_changed(paths.dataset_job_file(study.data_dir, dataset), study.dataset(dataset))


def write_study_file(study, config: dict) -> str:
    """Write the study's validated config as YAML (what `--configfile` reads; if it changed) for its
    results jobs; return its path."""
    path = Path(paths.study_config_file(study.out))
    content = json.loads(json.dumps(config))
    try:
        if yaml.safe_load(path.read_text()) == content:
            return str(path)
    except (OSError, yaml.YAMLError):
        pass  # none yet, or a damaged one: write it
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def read_job_file(path: str | Path, cell_id: str) -> tuple[dict, dict]:
    """The resolved cell and the tracking settings in a cell file, or a JobFileError naming it."""
    try:
        content = json.loads(Path(path).read_text())
        cell, tracking = content["cell"], content.get("tracking") or {}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise JobFileError(f"cell file {path}: cannot read the cell ({type(error).__name__}: {error})") from None
    if cell.get("id") != cell_id:
        raise JobFileError(f"cell file {path} holds cell {cell.get('id')!r}, not {cell_id!r}")
    return cell, tracking


def read_dataset_file(path: str | Path, dataset: str) -> dict:
    """The dataset entry in a dataset file, or a JobFileError naming the file."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise JobFileError(f"dataset file {path}: cannot read dataset {dataset!r} ({type(error).__name__}: {error})") \
            from None
    if not isinstance(spec, dict):
        raise JobFileError(f"dataset file {path}: holds no config entry for dataset {dataset!r}")
    return spec
