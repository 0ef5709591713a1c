"""A table of image paths and labels (CSV or parquet), as exported by annotation tools: paths relative
to `root` (default: the table's folder) or absolute, labels as strings, optional split and group columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetConfigError, Source
from .catalogue import Catalogue
from .images import FileReader, PathReader
from .listing import file_sha256, file_stats, listing_record

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def read_table(path: Path, columns: list[str]):
    """The table's `columns` as strings (pandas); a missing column is an error naming the file and it."""
    import pandas as pd

    if path.suffix.lower() in (".parquet", ".pq"):
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (its columns: {', '.join(map(str, table.columns))})")
    table = table[columns].astype(str).apply(lambda column: column.str.strip())
    for column in columns:
        empty = np.flatnonzero((table[column] == "").to_numpy())
        if len(empty):
            raise ValueError(f"{path}: row {empty[0] + 2} has no {column!r}")
    return table


def sorted_labels(values) -> list[str]:
    """Distinct labels, sorted as numbers when they all are ("2" before "10"), else as strings."""
    distinct = sorted(set(values))
    numeric = all(value.lstrip("-").isdigit() for value in distinct)
    return sorted(distinct, key=int) if numeric else distinct


def root_of(spec: dict) -> Path:
    """The folder the table's relative paths start from: `root`, or the table's own folder."""
    return Path(spec["root"]) if spec.get("root") else Path(spec["path"]).parent


class Table(Source):
    """`path`: the table; `path_column`, `label_column`, optional `split_column` (used as given) and
    `group_column` (a group's images share one split); the plan records the table's SHA-256 and every
    file it names with its size and modification time."""

    DEFAULTS = {"path": None, "root": None, "path_column": "path", "label_column": "label", "split_column": None,
                "group_column": None, "split": {"train": 0.8, "val": 0.1, "test": 0.1}, "val_fraction": 0.1,
                "shards": 1}
    DECODES = True

    def check(self, name: str, spec: dict) -> None:
        """`path` is given."""
        if not spec["path"]:
            raise DatasetConfigError(f"datasets.{name}.path: source 'csv' needs the table (.csv or .parquet)")
        super().check(name, spec)

    def files(self, name: str, spec: dict) -> tuple[Path, Path]:
        """The table and the root its paths are relative to; either missing is an error naming its key."""
        table = Path(spec["path"])
        if not table.is_file():
            raise DatasetConfigError(f"datasets.{name}.path: {table} is not a file")
        root = root_of(spec)
        if not root.is_dir():
            raise DatasetConfigError(f"datasets.{name}.root: {root} is not a folder")
        return table, root

    def columns(self, spec: dict) -> list[str]:
        """The table's columns the entry names."""
        return [spec[key] for key in ("path_column", "label_column", "split_column", "group_column") if spec[key]]

    def record(self, table: Path, root: Path, keys: list[str]) -> dict:
        """What the plan records: the table's SHA-256 and every file it names with size and mtime."""
        return listing_record("table", str(table), file_stats(root, keys), root=str(root), sha256=file_sha256(table))

    def checked_rows(self, table: Path, spec: dict):
        """The table's rows (`read_table`); a path listed twice or an unknown split name is an error naming
        the row."""
        rows = read_table(table, self.columns(spec))
        seen = {}
        for row, key in enumerate(rows[spec["path_column"]]):
            if key in seen:
                raise ValueError(f"{table}: rows {seen[key] + 2} and {row + 2} both name {key}")
            seen[key] = row
        if spec.get("split_column"):
            unknown = np.flatnonzero(~rows[spec["split_column"]].str.lower().isin(list(SPLIT_NAMES)).to_numpy())
            if len(unknown):
                raise ValueError(f"{table}: row {unknown[0] + 2} has split {rows[spec['split_column']].iloc[unknown[0]]!r}"
                                 f"; use one of {', '.join(SPLIT_NAMES)}")
        return rows

    def open_catalogue(self, raw_dir, spec: dict) -> Catalogue:
        """Read the table (`checked_rows`)."""
        table, root = Path(spec["path"]), root_of(spec)
        rows = self.checked_rows(table, spec)
        keys = rows[spec["path_column"]].tolist()
        class_names = sorted_labels(rows[spec["label_column"]])
        splits = np.full(len(keys), "")
        if spec.get("split_column"):
            splits = rows[spec["split_column"]].str.lower().map(SPLIT_NAMES).to_numpy(dtype=str)
        return Catalogue(
            class_names=class_names,
            labels=np.array([class_names.index(label) for label in rows[spec["label_column"]]], np.int64),
            splits=splits,
            keys=keys,
            reader=FileReader(root, tuple(keys)),
            groups=rows[spec["group_column"]].to_numpy(dtype=str) if spec.get("group_column") else None,
            sources=[self.record(table, root, keys)],
        )

    def check_files(self, name: str, spec: dict) -> None:
        """The table and its root are there, and its rows are sound (`checked_rows`)."""
        table, _ = self.files(name, spec)
        try:
            self.checked_rows(table, spec)
        except (ValueError, OSError) as error:
            raise DatasetConfigError(f"datasets.{name}.path: {error}") from None

    def inputs(self, name: str, spec: dict, raw_root) -> list[str]:
        """None (its `fingerprint` is what counts); a missing table or root is an error naming the key."""
        self.files(name, spec)
        return []

    def fingerprint(self, name: str, spec: dict) -> str:
        """The digest of the table's bytes and of every file it names, with sizes and modification times."""
        table, root = self.files(name, spec)
        try:
            keys = read_table(table, [spec["path_column"]])[spec["path_column"]].tolist()
        except ValueError as error:
            raise DatasetConfigError(f"datasets.{name}.path_column: {error}") from None
        return self.record(table, root, keys)["fingerprint"]

    def plan_reader(self, plan: dict) -> PathReader:
        """The plan's files, read by path."""
        return PathReader(root_of(plan["spec"]))


TABLE = Table()
