"""The real rules from download to prepared shards, against archives served on 127.0.0.1."""

import hashlib
import itertools
import json
import re
import shutil
import subprocess
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image

from archives import file_server, jpeg_bytes, make_cifar10, make_petimages  # noqa: F401  (fixture)
from conftest import REPO, load_study_file, snakemake, tiny_study, write_config
from workflow.data.shards import read_split, shard_files
from test_workflow import job_counts

pytestmark = pytest.mark.pipeline  # every test runs Snakemake

CIFAR = "cifar-10-python.tar.gz"
CATS = "kagglecatsanddogs_5340.zip"


def targets(configfile) -> list[str]:
    """The manifests at 16 px of the study's c10 and cats (their keys digest the test server's address too)."""
    study = load_study_file(configfile)
    return [str(study.manifest_path(name, 16)) for name in ("c10", "cats")]


@pytest.fixture
def served(file_server, tmp_path):
    """A tiny CIFAR-10 tarball and a PetImages zip (two undecodable images) on the test server."""
    make_cifar10(tmp_path / CIFAR, per_class=2)
    file_server.files[f"/c10/{CIFAR}"] = (tmp_path / CIFAR).read_bytes()
    make_petimages(tmp_path / CATS)
    with zipfile.ZipFile(tmp_path / CATS, "a") as zf:  # four more good images per class
        for name, i in itertools.product(("Cat", "Dog"), range(10, 14)):
            zf.writestr(f"PetImages/{name}/{i}.jpg", jpeg_bytes(Image.new("RGB", (9, 11), (i, i, i))))
    file_server.files[f"/cats/{CATS}"] = (tmp_path / CATS).read_bytes()
    return file_server


def study(server, cifar_md5: str) -> dict:
    config = tiny_study("pipeline")
    config["datasets"] = {
        "c10": {"source": "cifar10", "mirror": server.url("/c10/"), "checksums": {CIFAR: cifar_md5},
                "shards": 2, "chunk_images": 8},
        "cats": {"source": "cats_vs_dogs", "mirror": server.url("/cats"),
                 "split": {"train": 0.5, "val": 0.25, "test": 0.25}, "shards": 2},
    }
    config.pop("pretrain")
    config["grid"].update(dataset=["c10", "cats"], weights=["none"])
    return config


def test_download_resumes_then_prepares_shards_and_manifests(served, tmp_path):
    work = tmp_path / "work"
    md5 = hashlib.md5(served.files[f"/c10/{CIFAR}"]).hexdigest()
    configfile = write_config(tmp_path / "study.yaml", study(served, md5))
    raw = work / "results/raw/cifar10" / CIFAR
    manifests = targets(configfile)

    served.cut_after = 5000  # the connection drops after 5,000 bytes
    failed = snakemake(work, f"results/raw/cifar10/{CIFAR}", "--cores", "1", "--configfile", str(configfile),
                       check=False)
    assert failed.returncode != 0 and not raw.exists()
    assert raw.with_name(CIFAR + ".partial").stat().st_size == 5000
    assert "connection closed after 5000 of" in (work / f"results/raw/logs/cifar10/{CIFAR}.log").read_text()

    plan = snakemake(work, *manifests, "-n", "--configfile", str(configfile))
    assert job_counts(plan.stdout) == {"download": 2, "plan": 2, "shard": 4, "manifest": 2}
    snakemake(work, *manifests, "--cores", "2", "--configfile", str(configfile))
    cifar_requests = [r["range"] for r in served.requests if r["path"] == f"/c10/{CIFAR}"]
    assert cifar_requests == [None, "bytes=5000-"], "resumed where it stopped"
    assert raw.read_bytes() == served.files[f"/c10/{CIFAR}"]

    manifest = json.loads((work / manifests[0]).read_text())
    assert manifest["totals"] == {"train": 90, "val": 10, "test": 20}
    assert manifest["counts"]["val"] == {f"class{i}": 1 for i in range(10)}
    assert manifest["sources"][0]["md5"] == md5 and manifest["sources"][0]["verified"]
    assert [s["file"] for s in manifest["shards"]] == ["r16/shard-0-of-2.h5", "r16/shard-1-of-2.h5"]
    assert "bilinear" in manifest["resize_method"] and manifest["skipped_count"] == 0

    cats = json.loads((work / manifests[1]).read_text())
    assert cats["skipped_count"] == 2 and sum(cats["totals"].values()) == 13
    assert sorted(s["file"] for s in cats["skipped"]) == ["PetImages/Cat/666.jpg", "PetImages/Dog/1.jpg"]
    assert cats["ignored_count"] == 3

    # a fresh h5py reader sees what the manifest says, across both shards
    files = shard_files(work / manifests[0])
    with h5py.File(files[1], "r") as f:
        assert f["train"]["images"].chunks == (8, 16, 16, 3) and f.attrs["part"] == 1
        assert f["train"]["labels"].attrs["sha256"] == manifest["shards"][1]["sha256"]["train"]["labels"]
    images, labels = read_split(work / manifests[0], "train")
    assert images.shape == (90, 16, 16, 3) and np.bincount(labels).tolist() == [9] * 10
    if shutil.which("h5ls"):
        listing = subprocess.run(["h5ls", "-r", str(files[0])], capture_output=True, text=True, check=True).stdout
        assert re.search(r"/train/images\s+Dataset \{45/Inf, 16, 16, 3\}", listing), listing

    rerun = snakemake(work, *manifests, "-n", "--configfile", str(configfile))
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


def test_checksum_mismatch_stops_naming_file_expected_and_found(served, tmp_path):
    work = tmp_path / "work"
    found = hashlib.md5(served.files[f"/c10/{CIFAR}"]).hexdigest()
    configfile = write_config(tmp_path / "study.yaml", study(served, "0" * 32))
    result = snakemake(work, targets(configfile)[0], "--cores", "1", "--configfile", str(configfile), check=False)
    assert result.returncode != 0
    log = (work / f"results/raw/logs/cifar10/{CIFAR}.log").read_text()
    assert f"results/raw/cifar10/{CIFAR}: md5 is {found}, expected {'0' * 32}" in log
    assert not (work / "results/raw/cifar10" / CIFAR).exists()
    assert (work / "results/raw/cifar10" / (CIFAR + ".bad")).read_bytes() == served.files[f"/c10/{CIFAR}"]


def test_plans_of_the_default_study_and_of_local_copies(tmp_path, study_file):
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config.yaml"))
    counts = job_counts(result.stdout)
    assert {k: counts[k] for k in ("download", "plan", "shard", "manifest")} == \
        {"download": 2, "plan": 2, "shard": 8, "manifest": 2}

    config = tiny_study()
    config["datasets"]["local"] = {"source": "cifar10", "path": str(tmp_path / "nowhere")}
    config["grid"]["dataset"] = ["digits-5to9", "local"]
    failed = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)), check=False)
    assert f"datasets.local.path: {tmp_path / 'nowhere'} holds no {CIFAR}" in failed.stdout + failed.stderr

    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / CIFAR).write_bytes(b"")
    planned = job_counts(snakemake(tmp_path, "-n", "--configfile", str(study_file(config))).stdout)
    assert "download" not in planned and planned["plan"] == 3
