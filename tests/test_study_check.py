"""One check of a study before any job (`load_checked_study`): `python -m workflow cells` and `status` refuse
what the Snakefile refuses, with the same line as the tests' `study_error`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, study_error, tiny_study, write_config


def missing_weights_file(tmp_path) -> dict:
    config = tiny_study()
    config["grid"]["weights"] = [str(tmp_path / "gone.pt")]
    del config["pretrain"]
    return config


def missing_image_folder(tmp_path) -> dict:
    config = tiny_study()
    config["datasets"]["mine"] = {"source": "imagefolder", "path": str(tmp_path / "no-such-folder")}
    config["grid"]["dataset"] = ["mine"]
    return config


@pytest.mark.parametrize("command", ["cells", "status"])
@pytest.mark.parametrize("make, named", [(missing_weights_file, "gone.pt"), (missing_image_folder, "datasets.mine.path")],
                         ids=["weights file", "image folder"])
def test_a_study_the_snakefile_refuses_is_refused_by_cells_and_status_with_the_same_line(tmp_path, command, make,
                                                                                         named):
    path = write_config(tmp_path / "study.yaml", make(tmp_path))
    expected = f"Invalid study config {path}: {study_error(path)}"  # as the Snakefile says it
    assert named in expected, expected
    result = subprocess.run([sys.executable, "-m", "workflow", command, "--configfile", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and result.stdout == "", result.stdout
    assert result.stderr.strip() == f"error: {expected}", result.stderr
