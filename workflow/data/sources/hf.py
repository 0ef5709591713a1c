"""A Hugging Face dataset saved with `datasets.save_to_disk` (a Dataset or a DatasetDict), a folder of its
parquet files (split from each file's name or folder: `train-00000-of-00001.parquet`, `test/...`) or one
parquet file: images from `image_column`, labels from `label_column` (a ClassLabel, or strings)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetConfigError, Source
from .catalogue import Catalogue
from .images import decode
from .listing import file_stats, folder_record, listing_record
from .table import SPLIT_NAMES, sorted_labels


def load_parts(path: Path) -> dict:
    """{split name as the dataset has it: datasets.Dataset}; "" for a dataset without splits."""
    import datasets

    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no save_to_disk dataset and no parquet files")
    by_split: dict[str, list] = {}
    for file in files:
        split = next((part for part in (file.name.split("-")[0].split("_")[0], file.parent.name)
                      if part.lower() in SPLIT_NAMES), "") if path.is_dir() else ""
        by_split.setdefault(split, []).append(datasets.Dataset(InMemoryTable(pq.read_table(file))))
    return {split: datasets.concatenate_datasets(parts) for split, parts in by_split.items()}


@dataclass(frozen=True)
class RowReader:
    """Decodes the images of rows (part, row) of the loaded dataset, undecoded by `datasets` itself."""

    parts: dict
    rows: tuple[tuple[str, int], ...]
    image_column: str

    def __call__(self, indices):
        images = []
        for i in indices:
            split, row = self.rows[i]
            value = self.parts[split][row][self.image_column]
            key = f"{split}/{row}" if split else str(row)
            data = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
            images.append(decode(data, key))
        return images


def labels_of(parts: dict, column: str, where: str) -> tuple[list[str], dict]:
    """The class names and each part's labels as ints: a ClassLabel's names, else the sorted strings."""
    import datasets

    features = {split: part.features for split, part in parts.items()}
    for split, feature in features.items():
        if column not in feature:
            raise ValueError(f"{where}: no column {column!r} in split {split or '(none)'!r} "
                             f"(its columns: {', '.join(feature)})")
    first = next(iter(features.values()))[column]
    if isinstance(first, datasets.ClassLabel):
        return list(first.names), {split: np.asarray(part[column], np.int64) for split, part in parts.items()}
    values = {split: [str(v) for v in part[column]] for split, part in parts.items()}
    names = sorted_labels([v for part in values.values() for v in part])
    return names, {split: np.array([names.index(v) for v in part], np.int64) for split, part in values.items()}


class HuggingFace(Source):
    """`path`: a save_to_disk folder or parquet files; the plan records their files' sizes and mtimes."""

    DEFAULTS = {"path": None, "image_column": "image", "label_column": "label",
                "split": {"train": 0.8, "val": 0.1, "test": 0.1}, "val_fraction": 0.1, "shards": 1}
    DECODES = True

    def check(self, name: str, spec: dict) -> None:
        """`path` is given."""
        if not spec["path"]:
            raise DatasetConfigError(f"datasets.{name}.path: source 'hf' needs the dataset's folder or parquet file")
        super().check(name, spec)

    def record(self, name: str, spec: dict) -> dict:
        """Every visible file of the dataset with size and mtime; a missing path is an error naming the key."""
        path = Path(spec["path"])
        if path.is_dir():
            return folder_record(path)
        if not path.is_file():
            raise DatasetConfigError(f"datasets.{name}.path: {path} is neither a folder nor a parquet file")
        return listing_record("file", str(path), file_stats(path.parent, [path.name]))

    def open_catalogue(self, raw_dir, spec: dict) -> Catalogue:
        """Every row of the train, validation and test splits (other splits are ignored)."""
        import datasets

        path = Path(spec["path"])
        parts = load_parts(path)
        kept = {split: part for split, part in parts.items() if split == "" or split.lower() in SPLIT_NAMES}
        ignored = [{"file": f"split {split}", "reason": "not train, validation or test"}
                   for split in parts if split not in kept]
        class_names, labels = labels_of(kept, spec["label_column"], str(path))
        for split, part in kept.items():
            if not isinstance(part.features.get(spec["image_column"]), datasets.Image):
                raise ValueError(f"{path}: column {spec['image_column']!r} of split {split or '(none)'!r} is not an "
                                 "Image feature (set image_column)")
            kept[split] = part.cast_column(spec["image_column"], datasets.Image(decode=False))
        rows = tuple((split, row) for split, part in kept.items() for row in range(len(part)))
        return Catalogue(
            class_names=class_names,
            labels=np.concatenate([labels[split] for split in kept]),
            splits=np.array([SPLIT_NAMES.get(split.lower(), "") for split, _ in rows], dtype="<U5"),
            keys=[f"{split}/{row}" if split else str(row) for split, row in rows],
            reader=RowReader(kept, rows, spec["image_column"]),
            ignored=ignored,
            sources=[self.record("?", spec)],
        )

    def check_files(self, name: str, spec: dict) -> None:
        """`path` is a folder or a file."""
        path = Path(spec["path"])
        if not path.exists():
            raise DatasetConfigError(f"datasets.{name}.path: {path} is neither a folder nor a parquet file")

    def inputs(self, name: str, spec: dict, raw_root) -> list[str]:
        """None (its `fingerprint` is what counts); a missing path is an error naming the key."""
        self.record(name, spec)
        return []

    def fingerprint(self, name: str, spec: dict) -> str:
        """The digest of the dataset's files, with sizes and modification times."""
        return self.record(name, spec)["fingerprint"]


HUGGING_FACE = HuggingFace()
