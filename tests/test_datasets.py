"""Dataset entries: per-source defaults, errors naming the key, mirrors, checksums and shared downloads."""

import pytest
import yaml

from conftest import REPO
from workflow.data.datasets import COMMON, UNFILLED, DatasetConfigError, downloads, resolve_dataset, source_inputs
from workflow.data.sources import SOURCES, get_source

PER_SOURCE = {name: source.DEFAULTS for name, source in SOURCES.items()}


def test_per_source_defaults():
    cifar = resolve_dataset("c", {"source": "cifar100"})
    assert cifar["val_fraction"] == 0.1 and cifar["label_type"] == "fine" and cifar["shards"] == 4
    assert "split" not in cifar
    assert resolve_dataset("d", {"source": "digits"})["split"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    folder = resolve_dataset("f", {"source": "imagefolder", "path": "/data"})
    assert folder["split"] == {"train": 0.8, "val": 0.1, "test": 0.1} and folder["shards"] == 1
    assert resolve_dataset("p", {"source": "pcam"})["shards"] == 8
    given = resolve_dataset("c", {"source": "cats_vs_dogs", "per_class": {"train": 250, "val": 50}})
    assert given["per_class"] == {"train": 250, "val": 50} and given["chunk_images"] == 64


def test_schema_defaults_agree_with_the_code():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    keys = schema["properties"]["datasets"]["additionalProperties"]["properties"]
    for key, entry in keys.items():
        if "default" in entry:
            assert COMMON[key] == entry["default"], key
        else:
            assert key in ("source", *UNFILLED) or key in COMMON or any(key in d for d in PER_SOURCE.values()), key
    assert set(keys) - {"source"} == set(COMMON) | set(UNFILLED) | {k for d in PER_SOURCE.values() for k in d}


@pytest.mark.parametrize("spec, message", [
    ({"source": "cifar10", "split": {"train": 0.8, "val": 0.1, "test": 0.1}}, "datasets.x.split: not used by source 'cifar10'"),
    ({"source": "pcam", "split": {"train": 0.7, "val": 0.2, "test": 0.1}}, "datasets.x.split: not used by source 'pcam'"),
    ({"source": "cats_vs_dogs", "val_fraction": 0.2}, "datasets.x.val_fraction: not used by source 'cats_vs_dogs'"),
    ({"source": "cifar10", "label_type": "coarse"}, "datasets.x.label_type: not used by source 'cifar10': only cifar100"),
    ({"source": "digits", "path": "/tmp"}, "datasets.x.path: not used by source 'digits'"),
    ({"source": "imagefolder", "path": "/d", "mirror": "http://m/"}, "datasets.x.mirror: not used by source 'imagefolder'"),
    ({"source": "imagefolder"}, "datasets.x.path: source 'imagefolder' needs the folder of images"),
    ({"source": "cifar10", "path": "/d", "mirror": "http://m/"}, "datasets.x.mirror: not used together with path"),
    ({"source": "digits", "split": {"train": 0.8, "val": 0.3, "test": 0.1}}, "datasets.x.split: fractions add up to 1.2, not 1"),
    ({"source": "pcam", "checksums": {"train_x.h5.gz": "0" * 32}}, "datasets.x.checksums: pcam has no file 'train_x.h5.gz'"),
])
def test_bad_combinations_name_the_key(spec, message):
    with pytest.raises(DatasetConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        resolve_dataset("x", spec)


def test_mirror_and_checksums_replace_the_published_ones():
    spec = resolve_dataset("p", {"source": "pcam", "mirror": "http://127.0.0.1:8000/pcam/",
                                 "checksums": {"camelyonpatch_level_2_split_test_y.h5.gz": "a" * 32}})
    files = {f.filename: f for f in get_source("pcam").remote_files(spec)}
    test_y = files["camelyonpatch_level_2_split_test_y.h5.gz"]
    assert test_y.url == "http://127.0.0.1:8000/pcam/camelyonpatch_level_2_split_test_y.h5.gz"
    assert test_y.md5 == "a" * 32
    assert files["camelyonpatch_level_2_split_test_x.h5.gz"].md5 == "d8c2d60d490dbd479f8199bdfa0cf6ec"


def test_datasets_of_one_source_share_downloads_and_must_agree():
    fine, coarse = resolve_dataset("a", {"source": "cifar100"}), resolve_dataset("b", {"source": "cifar100",
                                                                                         "label_type": "coarse"})
    table = downloads({"a": fine, "b": coarse}, "raw")
    assert list(table) == ["raw/cifar100/cifar-100-python.tar.gz"]
    local = resolve_dataset("c", {"source": "cifar10", "path": "/data/cifar"})
    assert downloads({"c": local}, "raw") == {}
    mirrored = resolve_dataset("m", {"source": "cifar100", "mirror": "http://mirror.example/c100"})
    with pytest.raises(DatasetConfigError, match="datasets.a and datasets.m both download raw/cifar100/cifar-100"):
        downloads({"a": fine, "m": mirrored}, "raw")


def test_local_copies_are_found_or_named(tmp_path):
    (tmp_path / "camelyonpatch_level_2_split_train_x.h5").write_bytes(b"")  # unpacked, as torchvision leaves it
    for name in ("train_y", "valid_x", "valid_y", "test_x", "test_y"):
        (tmp_path / f"camelyonpatch_level_2_split_{name}.h5.gz").write_bytes(b"")
    spec = resolve_dataset("p", {"source": "pcam", "path": str(tmp_path)})
    inputs = source_inputs("p", spec, "raw")
    assert inputs[0] == str(tmp_path / "camelyonpatch_level_2_split_train_x.h5") and inputs[1].endswith("train_y.h5.gz")
    cifar = resolve_dataset("c", {"source": "cifar10", "path": str(tmp_path)})
    with pytest.raises(DatasetConfigError, match=f"datasets.c.path: {tmp_path} holds no cifar-10-python.tar.gz"):
        source_inputs("c", cifar, "raw")
    assert source_inputs("d", resolve_dataset("d", {"source": "cifar10"}), "raw") == [
        "raw/cifar10/cifar-10-python.tar.gz"]
