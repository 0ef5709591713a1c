"""Shared test helpers: running the real Snakemake workflow in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
_RUNNING = {"pipeline": True}  # whether the running test is marked `pipeline` (True outside a test)


def pytest_runtest_setup(item):
    _RUNNING["pipeline"] = item.get_closest_marker("pipeline") is not None


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run this repo's Snakefile in `workdir` with the test interpreter's environment (from a test marked
    `pipeline` only, so that the fast tier never runs Snakemake: docs/contributing.md)."""
    if not _RUNNING["pipeline"]:
        raise AssertionError("this test runs Snakemake: mark it @pytest.mark.pipeline (docs/contributing.md)")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def snakemake_log(workdir: Path) -> str:
    """Snakemake's own log file of its latest run in `workdir`: the rule blocks and shell commands the
    console leaves out (docs/monitoring.md)."""
    logs = sorted((Path(workdir) / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda path: path.stat().st_mtime)
    return logs[-1].read_text()


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load_study_file(path: Path):
    """A study file checked in-process by `load_checked_study`, as the Snakefile, `cells` and `status` check
    it. Returns the Study; a bad file raises the one-line StudyError they report."""
    from workflow.sweep.decisions import load_checked_study

    return load_checked_study([path]).study


def study_error(path: Path) -> str:
    """What is wrong with the study file at `path`, as the one line that refuses it says after naming the file."""
    from workflow.sweep.decisions import StudyError

    try:
        load_study_file(path)
    except StudyError as error:
        message = error.problem
        assert "\n" not in message, f"not one line: {message}"
        return message
    raise AssertionError(f"{path} should have been refused")


def tiny_study(name: str = "tiny") -> dict:
    """A study small enough to train end to end on two CPU cores in a minute or two."""
    return {
        "study": name,
        "datasets": {
            "digits-0to4": {"source": "digits", "classes": [0, 1, 2, 3, 4]},
            "digits-5to9": {"source": "digits", "classes": [5, 6, 7, 8, 9]},
        },
        "pretrain": {
            "base": {
                "dataset": "digits-0to4", "batch_size": 64, "lr": 0.001, "optimizer": "adam", "weights": "none",
                "training": {"stages": [{"name": "scratch", "train": "all", "epochs": 2}]},
            }
        },
        "grid": {
            "dataset": ["digits-5to9"],
            "model": ["resnet18"],
            "resolution": [16],
            "batch_size": [32, 64],
            "lr": [0.01],
            "optimizer": ["sgd", "adam"],
            "weights": ["pretrain:base"],
        },
        "training": {
            "stages": [
                {"name": "head", "train": "head", "epochs": 2},
                {"name": "finetune", "train": "cell", "epochs": 2, "lr_factor": 0.01},
            ],
        },
        "resources": {"train_threads": 1},
    }


# The one cell unit tests train on digits 0-2 (the `shard` fixture), and its two short stages.
UNIT_AXES = {"dataset": "digits-012", "model": "resnet18", "resolution": 16, "batch_size": 32, "lr": 0.01,
             "optimizer": "adam", "train": "all", "seed": 0, "weights": "none"}
UNIT_TRAINING = {"stages": [{"name": "head", "train": "head", "epochs": 2, "lr_factor": 1.0},
                            {"name": "finetune", "train": "cell", "epochs": 3, "lr_factor": 0.1}],
                 "early_stopping": {"patience": 5}}


def unit_study(training: dict | None = None, **axes) -> dict:
    """A checked one-cell study: UNIT_AXES with `axes` instead, UNIT_TRAINING deep-merged with `training`
    (a pretrain:<name> weights value gets a pretrain cell of that name)."""
    from workflow.core.cell import merge
    from workflow.study.config import check_config

    values = {**UNIT_AXES, **axes}
    config = {"study": "unit", "datasets": {values["dataset"]: {"source": "digits", "classes": [0, 1, 2]}},
              "grid": {axis: [value] for axis, value in values.items()},
              "training": merge(UNIT_TRAINING, training or {})}
    if values["weights"].startswith("pretrain:"):
        config["pretrain"] = {values["weights"][len("pretrain:"):]: {
            "dataset": values["dataset"], "batch_size": 32, "lr": 0.01, "optimizer": "adam", "weights": "none"}}
    check_config(config)
    return config


def make_cell(training: dict | None = None, **axes):
    """The cell of `unit_study(training, **axes)`, built as every study builds its cells."""
    from workflow.study.grid import build_study

    return build_study(unit_study(training, **axes)).grid_cells[0]


def write_cell_study(cell, path: Path, **keys) -> Path:
    """A one-cell study file whose cell is `cell` (its axes, its whole training), for a job's --configfile;
    `keys`: top-level study keys besides (study, tracking, results_dir, ...)."""
    from workflow.study.config import check_config

    axes = {axis: getattr(cell, axis) for axis in UNIT_AXES}
    config = {**unit_study(cell.training.as_mapping(), **axes), **keys}
    check_config(config)
    return write_config(Path(path), config)


def train_command(cell, manifest, out, init=None, threads: int | None = None) -> list[str]:
    """`python -m workflow train` as the train rule runs it: the cell's id and a study file that holds it
    (written beside `out`)."""
    study_file = write_cell_study(cell, Path(f"{out}.study.yaml"))
    return ([sys.executable, "-m", "workflow", "train", "--configfile", str(study_file), "--cell", cell.id,
             "--manifest", str(manifest), "--out", str(out)] + (["--init", str(init)] if init else [])
            + (["--threads", str(threads)] if threads else []))


def digits_shard(folder: Path, resolution: int) -> Path:
    """Digits 0-2 at `resolution` pixels in one shard file of `folder` (60/20/20 split), with its manifest."""
    from workflow.data.prepare import prepare_dataset

    spec = {"source": "digits", "classes": [0, 1, 2], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("digits-012", spec, resolution, folder / f"r{resolution}.h5", folder / f"r{resolution}.json")
    return folder / f"r{resolution}.h5"


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """Digits 0-2 at 16x16: small enough to train a cell in seconds."""
    return digits_shard(tmp_path_factory.mktemp("data"), 16)


@pytest.fixture(scope="session")
def finished_tiny_study(tmp_path_factory):
    """`tiny_study()` run end to end once per session with `snakemake --cores 2`: (work folder, study
    file, Snakemake's result). Shared by the pipeline tests that only read its results; a test that
    changes anything in the folder (reruns, forced jobs, other study files, a report) works on a copy
    (`copy_of_finished_tiny_study`)."""
    workdir = tmp_path_factory.mktemp("tiny")
    configfile = write_config(workdir / "tiny.yaml", tiny_study())
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    return workdir, configfile, result


def copy_of_finished_tiny_study(finished: tuple, folder: Path) -> tuple:
    """The shared finished tiny study copied into `folder` (file times kept, so Snakemake sees the same
    finished jobs): (work folder, study file, Snakemake's result) of the copy."""
    import shutil

    workdir, configfile, result = finished
    shutil.copytree(workdir, folder, symlinks=True)
    return folder, folder / configfile.relative_to(workdir), result


@pytest.fixture
def study_file(tmp_path):
    """Write a study config into tmp_path and return its path."""

    def make(config: dict, name: str = "study.yaml") -> Path:
        return write_config(tmp_path / name, config)

    return make
