"""Every shipped study resolves to the cells it resolved to when the pin was taken: the same ids, in the
same order, with the same settings (the JSON a training job is given, which is also what Snakemake's
params trigger compares, so a change here would retrain finished cells).

The pin, tests/pinned/studies.json, was written from the code before the typed cell (issue 25).
Regenerate it only for a change that is meant to alter cells: `python tests/test_pinned_studies.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIN = REPO / "tests" / "pinned" / "studies.json"
STUDIES = sorted(str(path.relative_to(REPO)) for path in (REPO / "studies").glob("*.yaml")) + ["config.yaml"]


def resolved(study_file: str) -> dict:
    """A study's grid cell ids in order and every cell's JSON by id."""
    from workflow.study.config import load_config
    from workflow.study.grid import build_study

    study = build_study(load_config(REPO / study_file))
    return {"grid": [cell.id for cell in study.grid_cells],
            "cells": {cell_id: json.loads(cell.to_json()) for cell_id, cell in sorted(study.cells.items())}}


@pytest.mark.parametrize("study_file", STUDIES)
def test_shipped_study_resolves_as_pinned(study_file):
    pinned = json.loads(PIN.read_text())
    assert study_file in pinned, f"{study_file} is not pinned: run python tests/test_pinned_studies.py"
    now = resolved(study_file)
    assert now["grid"] == pinned[study_file]["grid"]
    assert sorted(now["cells"]) == sorted(pinned[study_file]["cells"])
    for cell_id, cell in now["cells"].items():
        assert cell == pinned[study_file]["cells"][cell_id], cell_id


def test_every_shipped_study_is_pinned():
    assert sorted(json.loads(PIN.read_text())) == sorted(STUDIES)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    PIN.write_text(json.dumps({name: resolved(name) for name in STUDIES}, sort_keys=True, indent=0) + "\n")
    print(f"wrote {PIN}")
