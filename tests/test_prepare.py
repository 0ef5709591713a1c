"""Preparing datasets: splits, resizing, plans, shards written in parts, and the manifest that joins them."""

import hashlib
import itertools
import json
import shutil
import subprocess
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image

from archives import jpeg_bytes, make_cifar10, make_pcam, make_petimages
from workflow.data.download import ChecksumError, file_digest
from workflow.data.prepare import make_plan, prepare_dataset, write_manifest, write_shard
from workflow.data.resize import resize_batch, resize_images
from workflow.data.shards import read_split
from workflow.data.sources.digits import data_file
from workflow.data.splits import assign_splits, carve, stratified_split

def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's raw bytes, as shards record them."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


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


def test_val_carved_out_of_train_per_class():
    labels = np.repeat(np.arange(3), [50, 30, 5])
    kept, carved = carve(labels, 0.1, seed=0)
    assert sorted(np.concatenate([kept, carved]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[carved], minlength=3).tolist() == [5, 3, 0]  # round(0.5) == 0
    assert np.array_equal(carved, carve(labels, 0.1, seed=0)[1])
    source = np.array(["train"] * 85 + ["test"] * 4)
    splits = assign_splits(np.concatenate([labels, [0, 1, 2, 0]]), source, {"val_fraction": 0.1, "seed": 0}, "d")
    assert np.array_equal(splits["test"], np.arange(85, 89)) and len(splits["val"]) == 8
    with pytest.raises(ValueError, match=r"datasets.x: the source has the splits \['train', 'val'\]"):
        assign_splits(labels[:2], np.array(["train", "val"]), {"seed": 0}, "datasets.x")


@pytest.mark.parametrize("source_size, size", [(8, 32), (32, 160), (64, 20), (300, 160)])
def test_resize_matches_pillow_bilinear(source_size, size):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, source_size, source_size, 3), dtype=np.uint8)
    ours = resize_batch(images, size).astype(int)
    pillow = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images]).astype(int)
    assert ours.shape == (3, size, size, 3)
    assert np.abs(ours - pillow).max() <= 1  # rounding differences only


def test_resize_images_of_mixed_sizes_keeps_order():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(10, 12, 3), (7, 9, 3), (10, 12, 3), (24, 24, 3)]]
    out = resize_images(images, 24)
    for image, resized in zip(images, out):
        pillow = np.asarray(Image.fromarray(image).resize((24, 24), Image.BILINEAR)).astype(int)
        assert np.abs(resized.astype(int) - pillow).max() <= 1
    assert np.array_equal(out[3], images[3])


def test_prepare_digits_writes_shard_and_manifest(tmp_path):
    shard, manifest_path = tmp_path / "d" / "r24.h5", tmp_path / "d" / "r24.json"
    manifest = prepare_dataset("digits-5to9", SPEC, 24, shard, manifest_path)
    assert json.loads(manifest_path.read_text()) == json.loads(json.dumps(manifest))
    assert manifest["sources"][0]["sha256"] == file_digest(data_file())
    assert manifest["class_names"] == ["5", "6", "7", "8", "9"] and manifest["shards"][0]["file"] == "r24.h5"
    with h5py.File(shard, "r") as f:  # a fresh reader
        assert json.loads(f.attrs["class_names"]) == ["5", "6", "7", "8", "9"]
        total = 0
        for split in ("train", "val", "test"):
            images, labels = f[split]["images"], f[split]["labels"][...]
            assert images.dtype == np.uint8 and images.shape[1:] == (24, 24, 3)
            assert images.chunks == (64, 24, 24, 3)
            assert images.attrs["sha256"] == array_sha256(images[...])
            assert f[split]["labels"].attrs["sha256"] == array_sha256(labels)
            counts = np.bincount(labels, minlength=5)
            assert dict(zip(manifest["class_names"], counts.tolist())) == manifest["counts"][split]
            total += len(labels)
        # grayscale replicated into three equal channels
        image = f["train"]["images"][0]
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
        # stored in a shuffled order, so that blocks of consecutive images mix the classes
        assert len(np.unique(f["train"]["labels"][:20])) > 1
    assert total == 896  # digits 5-9: 182 + 181 + 179 + 174 + 180 images
    assert not list(shard.parent.glob(".*tmp*")), "no temporary files left behind"


def test_classes_by_name_and_unknown_class_is_a_clear_error(tmp_path):
    manifest = prepare_dataset("d", {**SPEC, "classes": ["9", 3]}, 8, tmp_path / "a.h5", tmp_path / "a.json")
    assert manifest["class_names"] == ["9", "3"]
    _, labels = read_split(tmp_path / "a.json", "train")
    assert set(labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match=r"datasets.d.classes: classes \[12\] do not exist"):
        prepare_dataset("d", {**SPEC, "classes": [1, 12]}, 16, tmp_path / "x.h5", tmp_path / "x.json")
    assert not (tmp_path / "x.h5").exists()


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    written = make_cifar10(raw / "cifar-10-python.tar.gz", per_class=4)
    return raw, written


def test_cifar_in_three_shards_joined_by_the_manifest(cifar, tmp_path):
    raw, written = cifar
    md5 = {"cifar-10-python.tar.gz": file_digest(raw / "cifar-10-python.tar.gz", "md5")}
    spec = {"source": "cifar10", "path": str(raw), "checksums": md5, "shards": 3, "chunk_images": 8,
            "compression": "gzip"}
    plan = make_plan("c10", spec, raw)
    assert plan["sources"][0]["verified"]
    sizes = {split: len(entry["indices"]) for split, entry in plan["splits"].items()}
    assert sizes == {"train": 180, "val": 20, "test": 40}  # 10 % of each class of train carved out as val
    assert np.bincount(plan["splits"]["val"]["labels"]).tolist() == [2] * 10
    shards = [tmp_path / "r16" / f"shard-{i}-of-3.h5" for i in range(3)]
    for i, shard in enumerate(shards):
        write_shard(plan, 16, i, 3, shard, log=lambda m: None)
    manifest = write_manifest(plan, 16, shards, tmp_path / "r16.json")
    assert [s["file"] for s in manifest["shards"]] == [f"r16/shard-{i}-of-3.h5" for i in range(3)]
    assert manifest["totals"] == sizes and manifest["compression"] == "gzip"
    assert sum(s["counts"]["train"] for s in manifest["shards"]) == 180

    # the split read back across the three shards is the planned images, resized, in the planned order
    images, labels = read_split(tmp_path / "r16.json", "test")
    source = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)] + [written["test_batch"][0]])
    test_indices = plan["splits"]["test"]["indices"]
    assert labels.tolist() == plan["splits"]["test"]["labels"]
    np.testing.assert_array_equal(images, resize_batch(source[test_indices], 16))
    with h5py.File(shards[1], "r") as f:
        assert f["train"]["images"].compression == "gzip" and f["train"]["images"].chunks[0] == 8
        assert (f.attrs["part"], f.attrs["parts"]) == (1, 3)

    # a shard that was changed, or one from another plan, is refused by name
    with h5py.File(shards[2], "r+") as f:
        f["val"]["images"][0, 0, 0, 0] ^= 1
    with pytest.raises(ValueError, match=f"{shards[2]}: val/images has sha256"):
        write_manifest(plan, 16, shards, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="plan_sha256"):
        write_manifest(make_plan("c10", {**spec, "seed": 1}, raw), 16, shards[:2] + shards[:1], tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_local_copy_is_checked_against_the_configured_md5(cifar, tmp_path):
    raw, _ = cifar
    found = file_digest(raw / "cifar-10-python.tar.gz", "md5")
    spec = {"source": "cifar10", "path": str(raw), "checksums": {"cifar-10-python.tar.gz": "0" * 32}}
    with pytest.raises(ChecksumError) as info:
        make_plan("c10", spec, raw)
    assert str(raw / "cifar-10-python.tar.gz") in str(info.value) and "0" * 32 in str(info.value)
    assert found in str(info.value)
    plan = make_plan("c10", {**spec, "checksums": {"cifar-10-python.tar.gz": found}}, raw)
    assert plan["sources"][0]["verified"] and plan["sources"][0]["md5"] == found


def test_per_class_subset_replaces_undecodable_images(tmp_path):
    make_petimages(tmp_path / "kagglecatsanddogs_5340.zip")
    spec = {"source": "cats_vs_dogs", "path": str(tmp_path), "split": {"train": 0.5, "val": 0.25, "test": 0.25},
            "per_class": {"train": 1}, "seed": 3}
    plan = make_plan("cats", spec, tmp_path)
    assert np.bincount(plan["splits"]["train"]["labels"]).tolist() == [1, 1]
    assert plan["sources"][0]["verified"] is False  # nothing published to check against
    with pytest.raises(ValueError, match="datasets.cats.per_class.train: class 'Dog' has 2 decodable images, 3 requested"):
        make_plan("cats", {**spec, "split": {"train": 0.98, "val": 0.01, "test": 0.01}, "per_class": {"train": 3}},
                  tmp_path)


def test_undecodable_images_are_skipped_and_counted(tmp_path):
    archive = tmp_path / "kagglecatsanddogs_5340.zip"
    make_petimages(archive)
    with zipfile.ZipFile(archive, "a") as zf:  # four more good images per class
        for name, i in itertools.product(("Cat", "Dog"), range(10, 14)):
            zf.writestr(f"PetImages/{name}/{i}.jpg", jpeg_bytes(Image.new("RGB", (9, 11), (i, i, i))))
    spec = {"source": "cats_vs_dogs", "path": str(tmp_path), "split": {"train": 0.5, "val": 0.25, "test": 0.25}}
    manifest = prepare_dataset("cats", spec, 12, tmp_path / "r12.h5", tmp_path / "r12.json", raw_dir=tmp_path)
    assert manifest["skipped_count"] == 2
    assert sorted(s["file"] for s in manifest["skipped"]) == ["PetImages/Cat/666.jpg", "PetImages/Dog/1.jpg"]
    assert manifest["ignored_count"] == 3
    assert {"file": "PetImages/Cat/Thumbs.db", "reason": "not an image file (.db)"} in manifest["ignored"]
    assert sum(manifest["totals"].values()) == 15 - 2
    assert sum(sum(counts.values()) for counts in manifest["counts"].values()) == 13

    with pytest.raises(ValueError, match=r"datasets.cats: split .val. is empty \(13 images in all\)"):  # 15 less 2 undecodable
        make_plan("cats", {**spec, "split": {"train": 0.9, "val": 0.05, "test": 0.05}}, tmp_path)


def test_pcam_keeps_its_split_and_checks_all_six_files(tmp_path):
    written = make_pcam(tmp_path)
    checksums = {f.name: file_digest(f, "md5") for f in tmp_path.glob("*.h5.gz")}
    spec = {"source": "pcam", "path": str(tmp_path), "checksums": checksums, "shards": 2}
    plan = make_plan("pcam", spec, tmp_path)
    assert {split: len(e["indices"]) for split, e in plan["splits"].items()} == {"train": 7, "val": 3, "test": 4}
    assert len(plan["sources"]) == 6 and all(record["verified"] for record in plan["sources"])
    shards = [tmp_path / f"shard-{i}-of-2.h5" for i in range(2)]
    for i, shard in enumerate(shards):
        write_shard(plan, 8, i, 2, shard, log=lambda m: None)
    write_manifest(plan, 8, shards, tmp_path / "r8.json")
    images, labels = read_split(tmp_path / "r8.json", "val")
    order = plan["splits"]["val"]["indices"]
    np.testing.assert_array_equal(images, written["valid"][0][np.asarray(order) - 7])  # at their own size: kept as they are
    assert labels.tolist() == written["valid"][1][np.asarray(order) - 7].tolist()


def test_pcam_with_val_fraction_carves_val_out_of_its_train_split(tmp_path):
    """The batch-size paper's 80/20 split of the training data: val is 20 % of each class of PCam's train
    split, PCam's valid split is left out, test stays PCam's test."""
    from workflow.data.datasets import resolve_dataset

    written = make_pcam(tmp_path, sizes={"train": 40, "valid": 6, "test": 5})
    checksums = {f.name: file_digest(f, "md5") for f in tmp_path.glob("*.h5.gz")}
    own_split = {"source": "pcam", "path": str(tmp_path), "checksums": checksums}
    spec = {**own_split, "val_fraction": 0.2}
    plan = make_plan("pcam", spec, tmp_path)
    train, val, test = (set(plan["splits"][split]["keys"]) for split in ("train", "val", "test"))
    part = "camelyonpatch_level_2_split_{}_x.h5[{}]"
    assert train | val == {part.format("train", i) for i in range(40)} and not train & val  # PCam's train only
    assert test == {part.format("test", i) for i in range(5)}
    labels = written["train"][1]
    val_labels = labels[[int(key.split("[")[1][:-1]) for key in val]]
    for label in (0, 1):
        assert (val_labels == label).sum() == round((labels == label).sum() * 0.2)  # 20 % of each class
    assert plan["spec"]["val_fraction"] == 0.2
    write_shard(plan, 8, 0, 1, tmp_path / "shard.h5", log=lambda m: None)
    write_manifest(plan, 8, [tmp_path / "shard.h5"], tmp_path / "r8.json")
    images, _ = read_split(tmp_path / "r8.json", "val")  # in the plan's order, from PCam's train file
    rows = [int(key.split("[")[1][:-1]) for key in plan["splits"]["val"]["keys"]]
    np.testing.assert_array_equal(images, written["train"][0][rows])
    assert "val_fraction" not in resolve_dataset("pcam", {"source": "pcam"})  # unset stays out: same data keys
    own = make_plan("pcam", own_split, tmp_path)
    assert {split: len(e["indices"]) for split, e in own["splits"].items()} == {"train": 40, "val": 6, "test": 5}


def test_imagefolder_with_train_and_test_folders_gets_val_carved(tmp_path):
    for split, n in (("train", 10), ("test", 2)):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("L", (5, 7), i * 20).save(tmp_path / split / name / f"{i}.png")
    spec = {"source": "imagefolder", "path": str(tmp_path), "val_fraction": 0.2}
    manifest = prepare_dataset("pets", spec, 8, tmp_path / "r8.h5", tmp_path / "r8.json")
    assert manifest["counts"] == {"train": {"cat": 8, "dog": 8}, "val": {"cat": 2, "dog": 2},
                                  "test": {"cat": 2, "dog": 2}}
    assert manifest["sources"][0]["files"] == 24 and len(manifest["sources"][0]["fingerprint"]) == 64


@pytest.mark.skipif(shutil.which("h5ls") is None, reason="h5ls (Debian hdf5-tools) is not installed")
def test_shard_readable_by_h5ls(tmp_path):
    shard = tmp_path / "r16.h5"
    prepare_dataset("d", SPEC, 16, shard, tmp_path / "r16.json")
    listing = subprocess.run(["h5ls", "-r", str(shard)], capture_output=True, text=True, check=True).stdout
    assert "/train/images" in listing and "/test/labels" in listing and "/skipped" in listing
    with h5py.File(shard, "r") as f:
        n = len(f["train"]["labels"])
    assert f"{{{n}/Inf, 16, 16, 3}}" in listing
