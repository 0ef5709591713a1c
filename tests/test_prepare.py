"""Preparing digits: stratified seeded splits, resizing, the HDF5 shard and its manifest."""

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from PIL import Image

from workflow.prepare import load_digits_source, prepare_dataset
from workflow.resize import resize_batch
from workflow.shards import array_sha256
from workflow.splits import stratified_split

SPEC = {"source": "digits", "classes": [5, 6, 7, 8, 9], "split": {"train": 0.7, "val": 0.15, "test": 0.15}, "seed": 0}


def test_stratified_split_is_seeded_disjoint_and_proportional():
    labels = np.repeat(np.arange(4), [100, 60, 40, 20])
    a = stratified_split(labels, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    b = stratified_split(labels, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    c = stratified_split(labels, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    together = np.concatenate(list(a.values()))
    assert len(together) == len(labels) == len(set(together.tolist()))
    for label, n in zip(range(4), [100, 60, 40, 20]):
        assert np.sum(labels[a["train"]] == label) == round(0.8 * n)
        assert np.sum(labels[a["val"]] == label) == round(0.1 * n)


@pytest.mark.parametrize("source_size, size", [(8, 32), (32, 160), (64, 20)])
def test_resize_matches_pillow_bilinear(source_size, size):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, source_size, source_size, 3), dtype=np.uint8)
    ours = resize_batch(images, size).astype(int)
    pillow = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images]).astype(int)
    assert ours.shape == (3, size, size, 3)
    assert np.abs(ours - pillow).max() <= 1  # rounding differences only


def test_prepare_digits_writes_shard_and_manifest(tmp_path):
    shard, manifest_path = tmp_path / "d" / "r24.h5", tmp_path / "d" / "r24.json"
    manifest = prepare_dataset("digits-5to9", SPEC, 24, shard, manifest_path)
    assert json.loads(manifest_path.read_text()) == json.loads(json.dumps(manifest))
    source_images, source_labels, sha = load_digits_source()
    assert manifest["source_sha256"] == sha and manifest["class_names"] == ["5", "6", "7", "8", "9"]
    with h5py.File(shard, "r") as f:  # a fresh reader
        assert json.loads(f.attrs["class_names"]) == ["5", "6", "7", "8", "9"]
        total = 0
        for split in ("train", "val", "test"):
            images, labels = f[split]["images"], f[split]["labels"][...]
            assert images.dtype == np.uint8 and images.shape[1:] == (24, 24, 3)
            assert images.chunks[0] >= 1 and images.chunks[1:] == (24, 24, 3)
            assert images.attrs["sha256"] == array_sha256(images[...])
            counts = dict(zip(*np.unique(labels, return_counts=True)))
            assert {manifest["class_names"][k]: int(v) for k, v in counts.items()} == manifest["counts"][split]
            total += len(labels)
        # grayscale replicated into three equal channels
        image = f["train"]["images"][0]
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    assert total == int(np.isin(source_labels, SPEC["classes"]).sum())
    assert not list(shard.parent.glob(".*tmp*")), "no temporary files left behind"


def test_unknown_class_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"classes \[12\] do not exist"):
        prepare_dataset("d", {**SPEC, "classes": [1, 12]}, 16, tmp_path / "x.h5", tmp_path / "x.json")
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.skipif(shutil.which("h5ls") is None, reason="h5ls (Debian hdf5-tools) is not installed")
def test_shard_readable_by_h5ls(tmp_path):
    shard = tmp_path / "r16.h5"
    prepare_dataset("d", SPEC, 16, shard, tmp_path / "r16.json")
    listing = subprocess.run(["h5ls", "-r", str(shard)], capture_output=True, text=True, check=True).stdout
    assert "/train/images" in listing and "/test/labels" in listing
    with h5py.File(shard, "r") as f:
        n = len(f["train"]["labels"])
    assert f"{{{n}, 16, 16, 3}}" in listing
