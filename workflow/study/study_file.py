"""The study file every job reads: results/<study>/study.yaml, the validated study with its defaults filled
in. The Snakefile writes it when a run starts (`onstart`, never in a dry run), before any job runs;
each job is given it with `--configfile` and the key of what it works on, and resolves its own settings
(workflow.sweep.decisions.load_sweep). Imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from workflow.atomic import atomic_path
from workflow.core import paths


def write_study_file(config: dict, path: str | Path) -> None:
    """Write the validated study `config` as YAML at `path` (what `--configfile` reads), unless the file
    already holds it (a run on a full disk then still reaches the job that fails, naming its own file)."""
    content = json.loads(json.dumps(config))
    try:
        if yaml.safe_load(Path(path).read_text()) == content:
            return
    except (OSError, yaml.YAMLError):
        pass  # none yet, or a damaged one: write it
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(yaml.safe_dump(content, sort_keys=False))


def job_tracking(study, tracking: dict | None) -> dict:
    """The study's tracking settings as its jobs use them: with MLflow on, the experiment (the study's
    name) and the store (default: SQLite, <results_dir>/mlflow.db)."""
    tracking = dict(tracking or {})
    if tracking.get("mlflow"):
        tracking["experiment"] = study.name
        tracking["tracking_uri"] = tracking.get("tracking_uri") or \
            f"sqlite:///{Path(study.results_dir).resolve() / paths.MLFLOW_DB}"
    return tracking
