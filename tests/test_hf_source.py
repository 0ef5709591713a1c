"""source: hf — a Hugging Face dataset saved with save_to_disk, or its parquet files."""

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from archives import make_imagefolder, png_bytes
from workflow.data.datasets import DatasetConfigError, resolve_dataset, source_fingerprint
from workflow.data.prepare import prepare_dataset
from workflow.data.sources import get_source

FEATURES = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["cat", "dog"])})


def odd_images(root):
    """make_imagefolder's odd modes and EXIF-rotated JPEG: (expected RGB by key, file of every key)."""
    expected = make_imagefolder(root)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".tif", ".jpg") and not p.name.startswith("."))
    return expected, {p.relative_to(root).as_posix(): p for p in files}


def test_modes_and_exif_decode_as_imagefolder_does(tmp_path):
    expected, files = odd_images(tmp_path / "images")
    keys = list(files)
    rows = {"image": [{"bytes": files[k].read_bytes(), "path": None} for k in keys], "label": [k.split("/")[0] for k in keys]}
    datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image(), "label": datasets.Value(
        "string")})).save_to_disk(str(tmp_path / "saved"))
    folder = get_source("imagefolder").open_catalogue(None, {"path": str(tmp_path / "images")})
    pd.DataFrame({"path": keys, "label": rows["label"]}).to_csv(tmp_path / "images" / "t.csv", index=False)
    for source, spec in [("hf", {"path": str(tmp_path / "saved")}), ("csv", {"path": str(tmp_path / "images" / "t.csv")})]:
        spec = resolve_dataset("odd", {"source": source, **spec})
        catalogue = get_source(source).open_catalogue(None, spec)
        assert catalogue.class_names == folder.class_names, source
        images = catalogue.read(range(len(catalogue)))
        by_key = dict(zip(keys, images))
        for key, rgb in expected.items():
            np.testing.assert_array_equal(by_key[key], rgb, err_msg=f"{source}: {key}")
        assert by_key["rotated/exif6.jpg"].shape == (40, 20, 3), source


def splits_dict(corrupt: bool) -> datasets.DatasetDict:
    """train 8 / validation 4 / test 4 images, two classes alternating; one train image corrupt if asked."""
    def part(n, offset):
        images = [{"bytes": png_bytes(Image.new("RGB", (7, 5), (offset + i, 0, 0))), "path": None} for i in range(n)]
        return datasets.Dataset.from_dict({"img": images, "y": [i % 2 for i in range(n)]}, features=FEATURES)
    parts = {"train": part(8, 0), "validation": part(4, 50), "test": part(4, 100)}
    if corrupt:
        rows = parts["train"].cast_column("img", datasets.Image(decode=False)).to_dict()
        rows["img"][0] = {"bytes": b"broken", "path": None}
        parts["train"] = datasets.Dataset.from_dict(rows, features=datasets.Features(
            {"img": datasets.Image(decode=False), "y": FEATURES["y"]})).cast_column("img", datasets.Image())
    return datasets.DatasetDict(parts)


def test_its_own_splits_class_labels_and_an_undecodable_image(tmp_path):
    splits_dict(corrupt=True).save_to_disk(str(tmp_path / "saved"))
    spec = {"source": "hf", "path": str(tmp_path / "saved"), "image_column": "img", "label_column": "y"}
    manifest = prepare_dataset("pets", spec, 4, tmp_path / "r4.h5", tmp_path / "r4.json")
    assert manifest["class_names"] == ["cat", "dog"]
    assert manifest["totals"] == {"train": 7, "val": 4, "test": 4}
    assert manifest["counts"]["train"] == {"cat": 3, "dog": 4}
    assert [entry["file"] for entry in manifest["skipped"]] == ["train/0"]


def test_parquet_files_name_their_splits(tmp_path):
    for split, part in splits_dict(corrupt=False).items():
        part.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    spec = {"source": "hf", "path": str(tmp_path / "data"), "image_column": "img", "label_column": "y"}
    manifest = prepare_dataset("pets", spec, 4, tmp_path / "r4.h5", tmp_path / "r4.json")
    assert manifest["totals"] == {"train": 8, "val": 4, "test": 4} and manifest["class_names"] == ["cat", "dog"]


def test_a_missing_path_names_the_key_and_the_fingerprint_follows_the_files(tmp_path):
    spec = resolve_dataset("h", {"source": "hf", "path": str(tmp_path / "saved")})
    with pytest.raises(DatasetConfigError, match=f"datasets.h.path: {tmp_path / 'saved'} is neither a folder"):
        source_fingerprint("h", spec)
    splits_dict(corrupt=False).save_to_disk(str(tmp_path / "saved"))
    before = source_fingerprint("h", spec)
    splits_dict(corrupt=True).save_to_disk(str(tmp_path / "saved2"))
    (tmp_path / "saved" / "train" / "data-00000-of-00001.arrow").write_bytes(
        (tmp_path / "saved2" / "train" / "data-00000-of-00001.arrow").read_bytes())
    assert source_fingerprint("h", spec) != before
