"""The plan: the only list of files shards read, drawn from images known to decode."""

import json

import numpy as np
from PIL import Image

from workflow.data.prepare import make_plan, write_manifest, write_shard
from workflow.data.shards import read_split

SPEC = {"source": "imagefolder", "split": {"train": 0.5, "val": 0.25, "test": 0.25}}


def colour_folder(root, counts: dict) -> None:
    """`counts[name]` images per class, each one colour: (class number x 100, image number x 20, 0)."""
    for label, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (5, 4), (label * 100, i * 20, 0)).save(root / name / f"{i}.png")


def test_shards_read_the_plans_files_by_path_after_the_folder_changes(tmp_path):
    colour_folder(tmp_path / "images", {"cat": 6, "dog": 6})
    plan = make_plan("pets", {**SPEC, "path": str(tmp_path / "images")}, None)
    Image.new("RGB", (5, 4), (255, 255, 255)).save(tmp_path / "images" / "cat" / "0a.png")  # sorts among the planned
    (tmp_path / "images" / "dog" / "5.png").unlink()
    write_shard(plan, 4, 0, 1, tmp_path / "r4.h5", log=lambda message: None)
    manifest = write_manifest(plan, 4, [tmp_path / "r4.h5"], tmp_path / "r4.json")

    assert [entry["file"] for entry in manifest["skipped"]] == ["dog/5.png"]
    assert "FileNotFoundError" in manifest["skipped"][0]["reason"]
    for split, entry in plan["splits"].items():
        images, labels = read_split(tmp_path / "r4.h5", split)
        kept = [(key, label) for key, label in zip(entry["keys"], entry["labels"]) if key != "dog/5.png"]
        assert labels.tolist() == [label for _, label in kept]
        for image, (key, label) in zip(images, kept):  # each stored image is the planned file's colour
            number = int(key.split("/")[1].removesuffix(".png"))
            assert key.startswith(("cat/", "dog/")[label])
            assert np.abs(image.astype(int) - (label * 100, number * 20, 0)).max() <= 1, key


def test_splits_are_drawn_from_images_that_decode(tmp_path):
    colour_folder(tmp_path / "images", {"cat": 8, "dog": 8})
    for i in range(4):
        (tmp_path / "images" / "dog" / f"{i}.png").write_bytes(b"not a png")
    plan = make_plan("pets", {**SPEC, "path": str(tmp_path / "images")}, None)
    sizes = {split: np.bincount(entry["labels"], minlength=2).tolist() for split, entry in plan["splits"].items()}
    assert sizes == {"train": [4, 2], "val": [2, 1], "test": [2, 1]}  # 8 cats and 4 decodable dogs, halved and quartered
    assert sorted(entry["file"] for entry in plan["skipped"]) == [f"dog/{i}.png" for i in range(4)]
    assert not {entry["file"] for entry in plan["skipped"]} & {k for e in plan["splits"].values() for k in e["keys"]}

    write_shard(plan, 4, 0, 1, tmp_path / "r4.h5", log=lambda message: None)
    manifest = write_manifest(plan, 4, [tmp_path / "r4.h5"], tmp_path / "r4.json")
    assert manifest["skipped_count"] == 4 and manifest["totals"] == {"train": 6, "val": 3, "test": 3}
    assert json.loads((tmp_path / "r4.json").read_text())["counts"]["val"] == {"cat": 2, "dog": 1}


def test_the_plan_records_the_fingerprint_the_snakefile_compares(tmp_path):
    from archives import make_imagefolder
    from workflow.data.datasets import resolve_dataset, source_fingerprint
    from workflow.data.sources import get_source

    make_imagefolder(tmp_path / "images")  # odd modes, hidden files, loose and non-image files
    spec = resolve_dataset("odd", {"source": "imagefolder", "path": str(tmp_path / "images")})
    (record,) = get_source("imagefolder").open_catalogue(None, spec).sources  # what make_plan records
    assert record["fingerprint"] == source_fingerprint("odd", spec)
    assert [name for name, _, _ in record["stats"]] == sorted(
        p.relative_to(tmp_path / "images").as_posix() for p in (tmp_path / "images").rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(tmp_path / "images").parts))


def test_a_plan_from_before_keys_still_shards_a_downloaded_source(tmp_path):
    spec = {"source": "digits", "classes": [0, 1], "split": {"train": 0.6, "val": 0.2, "test": 0.2}}
    plan = make_plan("d", spec, None)
    old = {**plan, "splits": {split: {k: v for k, v in entry.items() if k != "keys"}
                              for split, entry in plan["splits"].items()}}
    write_shard(plan, 8, 0, 1, tmp_path / "new.h5", log=lambda message: None)
    write_shard(old, 8, 0, 1, tmp_path / "old.h5", log=lambda message: None)
    for split in plan["splits"]:
        np.testing.assert_array_equal(read_split(tmp_path / "old.h5", split)[0], read_split(tmp_path / "new.h5", split)[0])


def test_files_changed_since_the_dry_run_stop_the_plan(tmp_path):
    import pytest

    from workflow.data.datasets import resolve_dataset, source_fingerprint

    colour_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    spec = resolve_dataset("pets", {**SPEC, "path": str(tmp_path / "images")})
    seen = source_fingerprint("pets", spec)
    assert make_plan("pets", spec, None, fingerprint=seen)["sources"][0]["fingerprint"] == seen
    Image.new("RGB", (5, 4)).save(tmp_path / "images" / "cat" / "late.png")
    with pytest.raises(ValueError, match=f"datasets.pets.path: {tmp_path / 'images'} changed while it was being planned"):
        make_plan("pets", spec, None, fingerprint=seen)
