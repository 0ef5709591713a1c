"""Hostile and missing source data (issue 27): sources that vanish after they were prepared, special
files and links in a folder, empty, tiny and unreadable classes, bad tables, 32-bit TIFFs and the
console line that counts skipped images. Each on real files; the Snakemake ones are marked `pipeline`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_study_file, snakemake, study_error, tiny_study, write_config
from workflow.data.datasets import resolve_dataset, source_fingerprint
from workflow.data.plan import make_plan, plan_notes, skipped_note
from workflow.data.sources import Skipped, get_source
from workflow.data.sources.images import decode

SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25}


def colour_folder(root, counts: dict) -> None:
    """`counts[name]` PNG images per class folder under `root`."""
    for label, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (5, 4), (label * 100, i * 20, 0)).save(root / name / f"{i}.png")


def folder_study(path) -> dict:
    """The tiny study on an image folder at `path`, without its pretrain cell."""
    config = tiny_study()
    config.pop("pretrain")
    config["datasets"] = {"pets": {"source": "imagefolder", "path": str(path), "split": SPLIT}}
    config["grid"].update({"dataset": ["pets"], "resolution": [8], "weights": ["none"]})
    return config


def plan_of(root, **keys) -> dict:
    """The plan of an image folder, made as the plan job makes it (with the Snakefile's fingerprint)."""
    spec = resolve_dataset("pets", {"source": "imagefolder", "path": str(root), "split": SPLIT, **keys})
    return make_plan("pets", spec, None, fingerprint=source_fingerprint("pets", spec))


class Hung(BaseException):
    """Raised in a body that runs too long (no `except Exception` swallows it)."""


@contextlib.contextmanager
def within(seconds: int):
    """Fail, instead of hanging, when the body takes longer than `seconds`."""
    def expire(*_):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# 1. a missing source is refused whenever the study loads

def test_a_missing_image_folder_is_refused_when_the_study_loads(study_file, tmp_path):
    message = study_error(study_file(folder_study(tmp_path / "my-imgs")))
    assert message == f"datasets.pets.path: {tmp_path / 'my-imgs'} is not a folder"


def test_a_missing_table_root_or_local_copy_is_refused_when_the_study_loads(study_file, tmp_path):
    colour_folder(tmp_path / "images", {"cat": 2, "dog": 2})
    table = tmp_path / "labels.csv"
    config = folder_study(tmp_path)
    config["datasets"]["pets"] = {"source": "csv", "path": str(table), "split": SPLIT}
    assert study_error(study_file(config)) == f"datasets.pets.path: {table} is not a file"

    table.write_text("path,label\nimages/cat/0.png,cat\n")
    config["datasets"]["pets"]["root"] = str(tmp_path / "gone")
    assert study_error(study_file(config)) == f"datasets.pets.root: {tmp_path / 'gone'} is not a folder"

    config["datasets"]["pets"] = {"source": "hf", "path": str(tmp_path / "hf-gone")}
    assert study_error(study_file(config)).startswith(f"datasets.pets.path: {tmp_path / 'hf-gone'} is neither")

    config["datasets"]["pets"] = {"source": "cifar10", "path": str(tmp_path)}
    config["grid"]["resolution"] = [32]
    assert study_error(study_file(config)) == f"datasets.pets.path: {tmp_path} holds no cifar-10-python.tar.gz"


def permission_bound(*command: str) -> subprocess.CompletedProcess:
    """Run `command` (a Python process of this repo) so that file modes bind it: as root, without the
    capabilities that let root read any folder (setpriv drops them from the bounding set)."""
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root reads a folder whatever its mode, and setpriv is not there to stop that")
        command = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", *command)
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))


def cells_verdict(configfile) -> subprocess.CompletedProcess:
    """`python -m workflow cells` on a study file, file modes binding it."""
    return permission_bound(sys.executable, "-m", "workflow", "cells", "--configfile", str(configfile))


def test_the_cells_command_gives_the_same_verdict(study_file, tmp_path):
    result = cells_verdict(study_file(folder_study(tmp_path / "my-imgs")))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith(f"datasets.pets.path: {tmp_path / 'my-imgs'} is not a folder")


def test_an_unreadable_image_folder_is_refused_when_the_study_loads(study_file, tmp_path):
    colour_folder(tmp_path / "images", {"cat": 2, "dog": 2})
    (tmp_path / "images").chmod(0)
    try:
        result = cells_verdict(study_file(folder_study(tmp_path / "images")))
    finally:
        (tmp_path / "images").chmod(0o755)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"datasets.pets.path: {tmp_path / 'images'} cannot be read (Permission denied); make it readable")


# 2. special files and links

def test_a_fifo_in_a_class_folder_is_skipped_and_listed_without_blocking(tmp_path):
    colour_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    os.mkfifo(tmp_path / "images" / "cat" / "x.jpg")
    with within(20):
        plan = plan_of(tmp_path / "images")
        assert isinstance(decode(tmp_path / "images" / "cat" / "x.jpg", "cat/x.jpg"), Skipped)
    assert {"file": "cat/x.jpg", "reason": "not a regular file (FIFO)"} in plan["ignored"]
    assert not any("x.jpg" in key for entry in plan["splits"].values() for key in entry["keys"])


def test_a_linked_class_folder_and_a_linked_image_are_read(tmp_path):
    colour_folder(tmp_path / "elsewhere", {"dog": 4})
    colour_folder(tmp_path / "images", {"cat": 4})
    os.symlink(tmp_path / "elsewhere" / "dog", tmp_path / "images" / "dog")
    os.symlink(tmp_path / "images" / "cat" / "0.png", tmp_path / "images" / "cat" / "link.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "images" / "cat" / "broken.png")
    os.symlink(tmp_path / "images", tmp_path / "images" / "cat" / "loop")  # a folder listed already
    with within(20):
        plan = plan_of(tmp_path / "images")  # planned at once, not "changed while it was being planned"
    keys = sorted(key for entry in plan["splits"].values() for key in entry["keys"])
    assert keys == sorted([f"cat/{i}.png" for i in range(4)] + ["cat/link.png"] + [f"dog/{i}.png" for i in range(4)])
    reasons = {entry["file"]: entry["reason"] for entry in plan["ignored"]}
    assert reasons["cat/broken.png"].startswith("a link to nothing")
    assert reasons["cat/loop"].startswith("a link to a folder listed already")


# 3. empty, tiny and unreadable classes

def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    colour_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    (tmp_path / "images" / "owl").mkdir()
    (tmp_path / "images" / "owl" / "notes.txt").write_text("to do")
    with pytest.raises(ValueError) as raised:
        plan_of(tmp_path / "images")
    assert str(raised.value) == (f"class folder {tmp_path / 'images' / 'owl'} holds no image "
                                 "files; add images or move it out of the dataset's folder")


def test_an_unreadable_class_folder_is_an_error_naming_it(tmp_path):
    colour_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    code = ("from test_hostile_sources import plan_of; import sys\n"
            f"try: plan_of({str(tmp_path / 'images')!r})\nexcept ValueError as error: sys.exit(str(error))")
    (tmp_path / "images" / "dog").chmod(0)
    try:
        result = permission_bound(sys.executable, "-c", f"import sys; sys.path.insert(0, 'tests')\n{code}")
    finally:
        (tmp_path / "images" / "dog").chmod(0o755)
    assert result.stderr.strip() == (f"class folder {tmp_path / 'images' / 'dog'} cannot be read (Permission denied); "
                                     "make it readable (chmod -R u+rX) or move it out of the dataset's folder")


def test_a_class_too_small_for_every_split_is_a_loud_note_naming_it(tmp_path):
    colour_folder(tmp_path / "images", {"cat": 4, "dog": 4, "owl": 1})
    plan = plan_of(tmp_path / "images")
    assert plan_notes(plan, tmp_path / "plan.json") == [
        "datasets.pets: class 'owl' has 1 image (train 1, val 0, test 0): it is never validated or tested; "
        "add images, or leave it out with `classes`"]


# 4. tables: checked when the study loads

def test_a_table_with_a_repeated_path_or_a_missing_label_is_refused_when_the_study_loads(study_file, tmp_path):
    colour_folder(tmp_path, {"cat": 2, "dog": 2})
    table = tmp_path / "labels.csv"
    config = folder_study(tmp_path)
    config["datasets"]["pets"] = {"source": "csv", "path": str(table), "split": SPLIT}
    table.write_text("path,label\ncat/0.png,cat\ncat/1.png,cat\ncat/0.png,dog\n")
    assert study_error(study_file(config)) == f"datasets.pets.path: {table}: rows 2 and 4 both name cat/0.png"
    table.write_text("path,label\ncat/0.png,cat\ncat/1.png,\n")
    assert study_error(study_file(config)) == f"datasets.pets.path: {table}: row 3 has no 'label'"
    table.write_text("path,label,split\ncat/0.png,cat,train\ncat/1.png,cat,later\n")
    config["datasets"]["pets"]["split_column"] = "split"
    config["datasets"]["pets"].pop("split")
    assert study_error(study_file(config)).startswith(f"datasets.pets.path: {table}: row 3 has split 'later'")


# 5. 32-bit images

def test_a_32_bit_tiff_holding_8_bit_values_keeps_them(tmp_path):
    values = np.array([[0, 1, 128, 255]], np.int32)
    Image.fromarray(values).save(tmp_path / "a.tif")  # PIL mode I: 32-bit signed
    assert Image.open(tmp_path / "a.tif").mode == "I"
    rgb = decode(tmp_path / "a.tif", "a.tif")
    np.testing.assert_array_equal(rgb[..., 0], values)

    sixteen = np.array([[0, 1000, 65535]], np.int32)  # 16-bit values in a 32-bit file: scaled as 16-bit
    Image.fromarray(sixteen).save(tmp_path / "b.tif")
    np.testing.assert_array_equal(decode(tmp_path / "b.tif", "b.tif")[..., 0], [[0, 4, 255]])


# 6. skipped images counted on the console

def test_the_plan_note_counts_skipped_images_by_kind(tmp_path):
    colour_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    (tmp_path / "images" / "cat" / "bad.png").write_bytes(b"not a png")
    (tmp_path / "images" / "dog" / "bad.png").write_bytes(b"not a png either")
    Image.new("RGB", (50, 50)).save(tmp_path / "cut.png")
    (tmp_path / "images" / "dog" / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:60])
    plan = plan_of(tmp_path / "images")
    assert plan_notes(plan, tmp_path / "plan.json") == [
        f"pets: 3 images skipped (unreadable 2, truncated 1); list: {tmp_path / 'plan.json'}"]


def test_a_shard_returns_the_files_it_skipped_for_its_console_note(tmp_path):
    from workflow.data.prepare import write_shard

    colour_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    plan = plan_of(tmp_path / "images")
    (tmp_path / "images" / "dog" / "1.png").unlink()  # gone between the plan and the shard
    os.mkfifo(tmp_path / "images" / "dog" / "1.png")  # and something that would block in its place
    with within(60):
        skipped = write_shard(plan, 4, 0, 1, tmp_path / "r4.h5", log=lambda message: None)
    assert [entry["file"] for entry in skipped] == ["dog/1.png"]
    assert skipped_note("pets", skipped, "shard 0 of 1 at r4, listed in its manifest") == (
        "pets: 1 image skipped (not a regular file 1); shard 0 of 1 at r4, listed in its manifest")


def test_a_console_note_goes_to_the_error_fd(tmp_path):
    code = "from workflow.integrity import console_note; console_note('pets: 1 image skipped')"
    with open(tmp_path / "console", "w") as console:
        result = subprocess.run(f"{sys.executable} -c \"{code}\" 3>&1 1>/dev/null 2>{tmp_path / 'log'}", shell=True,
                                env=dict(os.environ, TLSWEEP_ERROR_FD="3"), stdout=console, check=True, cwd=REPO)
    assert result.returncode == 0
    assert (tmp_path / "console").read_text() == "pets: 1 image skipped\n"
    assert (tmp_path / "log").read_text() == "pets: 1 image skipped\n"


# the pipeline: prepared, then the path changed; skipped images on Snakemake's console

@pytest.mark.pipeline
def test_a_prepared_folder_whose_path_changes_stops_the_dry_run_and_skips_are_on_the_console(tmp_path):
    images = tmp_path / "data" / "my-images"
    colour_folder(images, {"cat": 8, "dog": 8})
    (images / "dog" / "bad.png").write_bytes(b"not a png")
    configfile = write_config(tmp_path / "study.yaml", folder_study(images))
    manifest = str(load_study_file(configfile).manifest_path("pets", 8))
    prepared = snakemake(tmp_path / "work", manifest, "--cores", "1", "--configfile", str(configfile))
    assert "pets: 1 image skipped (unreadable 1); list: " in prepared.stderr

    moved = write_config(tmp_path / "moved.yaml", folder_study(tmp_path / "data" / "my-imgs"))
    result = snakemake(tmp_path / "work", "-n", "--configfile", str(moved), check=False)
    assert result.returncode != 0
    assert f"datasets.pets.path: {tmp_path / 'data' / 'my-imgs'} is not a folder" in result.stdout + result.stderr

    (images / "owl").mkdir()
    (images / "owl" / "notes.txt").write_text("to do")  # a class folder without images: the plan job fails
    result = snakemake(tmp_path / "work", manifest, "--cores", "1", "--configfile", str(configfile), check=False)
    assert result.returncode != 0
    assert (f"error: ValueError: class folder {images / 'owl'} holds no image files; add images or move it out of the "
            "dataset's folder") in result.stderr
    shutil.rmtree(images)
    result = snakemake(tmp_path / "work", "-n", "--configfile", str(configfile), check=False)
    assert result.returncode != 0 and f"datasets.pets.path: {images} is not a folder" in result.stdout + result.stderr
