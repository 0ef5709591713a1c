"""Load and validate a study config outside Snakemake (the Snakefile validates its own)."""

from __future__ import annotations

from pathlib import Path

import yaml

SCHEMA = Path(__file__).parents[1] / "schemas" / "config.schema.yaml"


def load_config(path: str | Path) -> dict:
    """Read a study YAML file and validate it against the schema, filling in defaults."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a study config must be a YAML mapping")
    try:
        validate(config, str(SCHEMA))
    except WorkflowError as error:
        raise ValueError(f"{path}: {error}") from None
    return config
