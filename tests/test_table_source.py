"""source: csv — a table of image paths and labels (CSV or parquet), through plan, shards and manifest."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workflow.data.datasets import DatasetConfigError, resolve_dataset, source_fingerprint
from workflow.data.prepare import make_plan, prepare_dataset
from workflow.data.splits import SPLITS


def write_images(folder, n: int, size=(6, 5)) -> list[str]:
    """`n` PNGs of distinct colours in `folder`, as names relative to its parent."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (i * 7 % 256, i, 0)).save(folder / f"{i}.png")
    return [f"{folder.name}/{i}.png" for i in range(n)]


def test_relative_and_absolute_paths_string_labels_and_a_missing_file(tmp_path):
    names = write_images(tmp_path / "imgs", 12)
    paths = names[:6] + [str(tmp_path / name) for name in names[6:]] + ["imgs/gone.png"]
    labels = ["tumour", "normal", "benign"] * 4 + ["normal"]
    pd.DataFrame({"file": paths, "diagnosis": labels}).to_csv(tmp_path / "labels.csv", index=False)
    spec = {"source": "csv", "path": str(tmp_path / "labels.csv"), "path_column": "file", "label_column": "diagnosis",
            "split": {"train": 0.5, "val": 0.25, "test": 0.25}}
    manifest = prepare_dataset("scans", spec, 8, tmp_path / "r8.h5", tmp_path / "r8.json")
    assert manifest["class_names"] == ["benign", "normal", "tumour"]  # sorted
    assert manifest["counts"] == {"train": dict.fromkeys(manifest["class_names"], 2),
                                  "val": dict.fromkeys(manifest["class_names"], 1),
                                  "test": dict.fromkeys(manifest["class_names"], 1)}
    assert [entry["file"] for entry in manifest["skipped"]] == ["imgs/gone.png"]
    assert manifest["sources"][0]["files"] == 13 and len(manifest["sources"][0]["sha256"]) == 64

    chosen = make_plan("scans", {**spec, "classes": ["tumour", "normal"]}, None)
    assert chosen["class_names"] == ["tumour", "normal"]


def test_a_group_never_straddles_splits(tmp_path):
    rows = []
    for patient in range(12):
        for name in write_images(tmp_path / f"p{patient}", 3 + patient % 3):
            rows.append({"path": name, "label": "sick" if patient % 2 else "well", "patient": f"P{patient}"})
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "t.csv", index=False)
    spec = {"source": "csv", "path": str(tmp_path / "t.csv"), "group_column": "patient",
            "split": {"train": 0.5, "val": 0.25, "test": 0.25}}
    plan = make_plan("ward", spec, None)
    patient_of = dict(zip(table["path"], table["patient"]))
    patients = {split: {patient_of[key] for key in plan["splits"][split]["keys"]} for split in SPLITS}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not patients[a] & patients[b], (a, b)
    assert sum(len(p) for p in patients.values()) == 12
    assert plan["groups"] == {"column": "patient", "counts": {split: len(patients[split]) for split in SPLITS}}
    assert sum(len(entry["keys"]) for entry in plan["splits"].values()) == len(table)

    with pytest.raises(ValueError, match=r"t.csv: no column 'site' \(its columns: path, label, patient\)"):
        make_plan("ward", {**spec, "group_column": "site"}, None)


def test_a_split_column_is_used_as_given_and_parquet_reads_the_same(tmp_path):
    names = write_images(tmp_path / "imgs", 16)
    splits = ["train"] * 8 + ["validation"] * 4 + ["test"] * 4
    table = pd.DataFrame({"path": names, "label": [str(i % 2) for i in range(16)], "fold": splits})
    table.to_parquet(tmp_path / "t.parquet")
    plan = make_plan("folds", {"source": "csv", "path": str(tmp_path / "t.parquet"), "split_column": "fold"}, None)
    for split, given in [("train", "train"), ("val", "validation"), ("test", "test")]:
        assert sorted(plan["splits"][split]["keys"]) == sorted(table.path[table.fold == given])

    table.loc[3, "fold"] = "holdout"
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="t.csv: row 5 has split 'holdout'"):
        make_plan("folds", {"source": "csv", "path": str(tmp_path / "t.csv"), "split_column": "fold"}, None)


def test_missing_table_or_root_names_the_key(tmp_path):
    with pytest.raises(DatasetConfigError, match="datasets.t.path: source 'csv' needs the table"):
        resolve_dataset("t", {"source": "csv"})
    with pytest.raises(DatasetConfigError, match=f"datasets.t.path: {tmp_path / 'nope.csv'} is not a file"):
        source_fingerprint("t", resolve_dataset("t", {"source": "csv", "path": str(tmp_path / "nope.csv")}))
    (tmp_path / "t.csv").write_text("path,label\na.png,x\n")
    with pytest.raises(DatasetConfigError, match=f"datasets.t.root: {tmp_path / 'imgs'} is not a folder"):
        source_fingerprint("t", resolve_dataset("t", {"source": "csv", "path": str(tmp_path / "t.csv"),
                                                      "root": str(tmp_path / "imgs")}))
    with pytest.raises(DatasetConfigError, match="datasets.f.group_column: not used by source 'imagefolder'"):
        resolve_dataset("f", {"source": "imagefolder", "path": "x", "group_column": "g"})


def test_the_fingerprint_follows_the_table_and_its_files(tmp_path):
    names = write_images(tmp_path / "imgs", 4)
    pd.DataFrame({"path": names, "label": list("abab")}).to_csv(tmp_path / "t.csv", index=False)
    spec = resolve_dataset("t", {"source": "csv", "path": str(tmp_path / "t.csv")})
    before = source_fingerprint("t", spec)
    assert source_fingerprint("t", spec) == before
    Image.new("RGB", (9, 9)).save(tmp_path / "imgs" / "0.png")
    edited = source_fingerprint("t", spec)
    assert edited != before
    pd.DataFrame({"path": names, "label": list("abba")}).to_csv(tmp_path / "t.csv", index=False)
    assert source_fingerprint("t", spec) not in (before, edited)
