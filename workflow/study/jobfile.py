"""The file a training job reads its cell from, so that its command line only names the cell.

The Snakefile writes <cell folder>/cell.json when it plans a cell's training job: the resolved cell
(workflow.study.grid.Cell.to_dict) and the study's `tracking` settings. It is rewritten only when
its content changes, so its time stamp says when the cell's config last changed. Imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from workflow.atomic import write_json
from workflow.study import paths


class JobFileError(ValueError):
    """A cell file that is missing, unreadable or for another cell."""


def write_job_file(study, cell_id: str, tracking: dict | None) -> str:
    """Write `cell_id`'s cell file (if its content changed) and return its path."""
    path = Path(paths.cell_job_file(study.cell_dir(cell_id)))
    content = {"study": study.name, "cell": study.cell(cell_id).to_dict(), "tracking": tracking or {}}
    try:
        if json.loads(path.read_text()) == json.loads(json.dumps(content)):
            return str(path)
    except (OSError, ValueError):
        pass  # none yet, or a damaged one: write it
    write_json(path, content)
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
