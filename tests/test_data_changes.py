"""Data that changes is noticed: real dry runs of a study on an image folder, after its manifest is
made, with the folder's files added, removed, edited, renamed or pointed at by a mistyped path."""

import os

import pytest
from PIL import Image

from conftest import snakemake, tiny_study, write_config
from test_workflow import job_counts
from workflow.study.config import load_config
from workflow.study.grid import build_study

pytestmark = pytest.mark.pipeline  # every test runs Snakemake


def manifest(configfile) -> str:
    """The manifest at 8 px of the study's `pets`: its folder is its definition's key (its files unchecked)."""
    return str(build_study(load_config(configfile)).manifest_path("pets", 8))


def folder_study(path) -> dict:
    """The tiny study, on an image folder at `path`, without its pretrain cell."""
    config = tiny_study()
    config.pop("pretrain")
    config["datasets"] = {"pets": {"source": "imagefolder", "path": str(path), "split": {"train": 0.5, "val": 0.25,
                                                                                      "test": 0.25}}}
    config["grid"].update({"dataset": ["pets"], "resolution": [8], "weights": ["none"]})
    return config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A folder of 2 x 8 images and a work folder where its manifest at r8 is made."""
    root = tmp_path_factory.mktemp("changes")
    images = root / "images"
    for label, name in enumerate(("cat", "dog")):
        (images / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (6, 5), (label * 200, i * 20, 0)).save(images / name / f"{i}.png")
    configfile = write_config(root / "study.yaml", folder_study(images))
    snakemake(root / "work", manifest(configfile), "--cores", "1", "--configfile", str(configfile))
    return root / "work", configfile, images


def dry_run(workdir, configfile, check=True):
    return snakemake(workdir, manifest(configfile), "-n", "--configfile", str(configfile), check=check)


def test_an_unchanged_folder_is_not_prepared_again(prepared):
    workdir, configfile, images = prepared
    (images / ".DS_Store").write_bytes(b"hidden")  # hidden files do not count
    (images / "cat" / "._0.png").write_bytes(b"hidden")
    try:
        result = dry_run(workdir, configfile)
        assert "Nothing to be done" in result.stdout + result.stderr
    finally:
        (images / ".DS_Store").unlink()
        (images / "cat" / "._0.png").unlink()


@pytest.mark.parametrize("change", ["added", "removed", "edited", "renamed"])
def test_changed_files_re_plan_and_re_prepare(prepared, change):
    workdir, configfile, images = prepared
    target = images / "dog" / "3.png"
    original, stat = target.read_bytes(), target.stat()
    if change == "added":
        Image.new("RGB", (6, 5)).save(images / "dog" / "new.png")
    elif change == "removed":
        target.unlink()
    elif change == "edited":
        Image.new("RGB", (6, 5), (9, 9, 9)).save(target)
    else:
        target.rename(images / "dog" / "3b.png")
    try:
        result = dry_run(workdir, configfile)
        assert job_counts(result.stdout) == {"plan": 1, "shard": 1, "manifest": 1}
        assert "Params have changed since last execution" in result.stdout
    finally:
        for extra in (images / "dog" / "new.png", images / "dog" / "3b.png"):
            extra.unlink(missing_ok=True)
        target.write_bytes(original)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(dry_run(workdir, configfile))


def test_a_mistyped_path_is_an_error_naming_the_key(prepared, tmp_path):
    workdir, _, images = prepared
    configfile = write_config(tmp_path / "typo.yaml", folder_study(images.parent / "imagse"))
    result = dry_run(workdir, configfile, check=False)
    assert result.returncode != 0
    assert f"datasets.pets.path: {images.parent / 'imagse'} is not a folder" in result.stdout + result.stderr


def test_another_folder_re_plans(prepared, tmp_path):
    workdir, _, images = prepared
    copy = tmp_path / "copy"
    os.symlink(images, copy)  # the same images under another path: a different source
    result = dry_run(workdir, write_config(tmp_path / "other.yaml", folder_study(copy)))
    assert job_counts(result.stdout) == {"plan": 1, "shard": 1, "manifest": 1}


def test_a_table_re_plans_when_it_changes_and_a_missing_one_names_the_key(tmp_path):
    for i in range(8):
        Image.new("RGB", (6, 5), (i * 30, 0, 0)).save(tmp_path / f"{i}.png")
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(8)))
    config = folder_study(tmp_path)
    config["datasets"]["pets"] = {"source": "csv", "path": str(table), "split": {"train": 0.5, "val": 0.25,
                                                                                   "test": 0.25}}
    configfile = write_config(tmp_path / "study.yaml", config)
    snakemake(tmp_path / "work", manifest(configfile), "--cores", "1", "--configfile", str(configfile))
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(dry_run(tmp_path / "work", configfile))

    table.write_text(table.read_text().replace("7.png,b", "7.png,a"))  # one label corrected
    assert job_counts(dry_run(tmp_path / "work", configfile).stdout) == {"plan": 1, "shard": 1, "manifest": 1}

    table.unlink()
    result = dry_run(tmp_path / "work", configfile, check=False)
    assert result.returncode != 0 and f"datasets.pets.path: {table} is not a file" in result.stdout + result.stderr


def test_setting_resize_crop_re_plans_and_re_shards(prepared, tmp_path):
    workdir, _, images = prepared  # prepared without `resize`: test_an_unchanged_folder_is_not_prepared_again
    config = folder_study(images)
    config["datasets"]["pets"]["resize"] = "crop"
    result = dry_run(workdir, write_config(tmp_path / "crop.yaml", config))
    assert job_counts(result.stdout) == {"plan": 1, "shard": 1, "manifest": 1}
