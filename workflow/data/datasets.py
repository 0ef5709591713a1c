"""A study's `datasets` entries: per-source defaults, checks, and where their files come from."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from workflow.data.sources import RemoteFile, get_source


class DatasetConfigError(ValueError):
    """A dataset entry that passes the schema but not the source's rules; names the key."""


# Keys every source takes, with their defaults.
COMMON = {"seed": 0, "classes": None, "per_class": None, "chunk_images": 64, "compression": "none"}

# Keys that only some sources take, with each source's default (None: no default).
PER_SOURCE = {
    "digits": {"split": {"train": 0.7, "val": 0.15, "test": 0.15}, "shards": 1},
    "imagefolder": {"path": None, "split": {"train": 0.8, "val": 0.1, "test": 0.1}, "val_fraction": 0.1, "shards": 1},
    "cats_vs_dogs": {"path": None, "mirror": None, "checksums": {}, "split": {"train": 0.8, "val": 0.1, "test": 0.1},
                     "shards": 4},
    "cifar10": {"path": None, "mirror": None, "checksums": {}, "val_fraction": 0.1, "shards": 4},
    "cifar100": {"path": None, "mirror": None, "checksums": {}, "val_fraction": 0.1, "label_type": "fine",
                 "shards": 4},
    "pcam": {"path": None, "mirror": None, "checksums": {}, "shards": 8},
}

# Why a source does not take a key.
NOT_FOR = {
    "split": "the source comes with its own split (cifar: train/test, carve val with val_fraction; pcam: all three)",
    "val_fraction": "only sources with a train/test split and no validation split use it (cifar10, cifar100, "
                    "imagefolder with train/ and test/ folders)",
    "label_type": "only cifar100 has label types (fine, coarse)",
    "path": "digits comes bundled with scikit-learn",
    "mirror": "nothing is downloaded for this source",
    "checksums": "nothing is downloaded for this source",
}


def resolve_dataset(name: str, spec: dict) -> dict:
    """The entry with every key the source uses filled in; DatasetConfigError for a bad combination."""
    source = spec["source"]
    if source not in PER_SOURCE:
        raise DatasetConfigError(f"datasets.{name}.source: unknown source {source!r}; known: {', '.join(PER_SOURCE)}")
    allowed = {"source", *COMMON, *PER_SOURCE[source]}
    for key in spec:
        if key not in allowed:
            raise DatasetConfigError(f"datasets.{name}.{key}: not used by source {source!r}: {NOT_FOR[key]}")
    resolved = {"source": source, **copy.deepcopy(COMMON), **copy.deepcopy(PER_SOURCE[source]),
                **copy.deepcopy(spec)}
    if source == "imagefolder" and not resolved["path"]:
        raise DatasetConfigError(f"datasets.{name}.path: source 'imagefolder' needs the folder of images")
    if resolved.get("path") and resolved.get("mirror"):
        raise DatasetConfigError(f"datasets.{name}.mirror: not used together with path (a local copy is not downloaded)")
    if "split" in resolved:
        total = sum(resolved["split"].values())
        if abs(total - 1.0) > 1e-6:
            raise DatasetConfigError(f"datasets.{name}.split: fractions add up to {total:g}, not 1")
    if resolved.get("checksums"):
        names = [f.filename for f in get_source(source).remote_files(resolved)]
        unknown = sorted(set(resolved["checksums"]) - set(names))
        if unknown:
            raise DatasetConfigError(f"datasets.{name}.checksums: {source} has no file {unknown[0]!r} "
                                     f"(its files: {', '.join(names)})")
    return resolved


def remote_files(spec: dict) -> list[RemoteFile]:
    """The resolved entry's files to download, with its mirror and checksum overrides applied."""
    files = get_source(spec["source"]).remote_files(spec)
    mirror, checksums = spec.get("mirror"), spec.get("checksums") or {}
    return [
        RemoteFile(f"{mirror.rstrip('/')}/{f.filename}" if mirror else f.url, f.filename, checksums.get(f.filename, f.md5))
        for f in files
    ]


def raw_dir(spec: dict, raw_root: str | Path) -> Path:
    """The folder that holds a resolved entry's source files: its `path`, or `<raw_root>/<source>`."""
    return Path(spec["path"]) if spec.get("path") else Path(raw_root) / spec["source"]


def source_raw_dir(spec: dict, raw_root: str | Path) -> Path | None:
    """The folder a resolved entry's plan reads source files from, or None for a source that reads
    none there (bundled with a package, or a folder of images named by `path`)."""
    if not get_source(spec["source"]).READS_RAW_FILES:
        return None
    return raw_dir(spec, raw_root)


def downloads(datasets: dict, raw_root: str | Path) -> dict[str, RemoteFile]:
    """Every file the study downloads, by destination path; datasets sharing a file must agree on it."""
    table, owner = {}, {}
    for name, spec in datasets.items():
        if spec.get("path"):
            continue
        for remote in remote_files(spec):
            dest = os.path.normpath(raw_dir(spec, raw_root) / remote.filename)
            if dest in table and table[dest] != remote:
                raise DatasetConfigError(
                    f"datasets.{owner[dest]} and datasets.{name} both download {dest} but differ in mirror or "
                    f"checksums ({table[dest].url}, md5 {table[dest].md5} vs {remote.url}, md5 {remote.md5})"
                )
            table[dest], owner[dest] = remote, name
    return table


def source_inputs(name: str, spec: dict, raw_root: str | Path) -> list[str]:
    """The files a resolved entry is prepared from; a local copy that is missing is an error naming `path`."""
    if spec["source"] == "digits":
        return []
    if spec["source"] == "imagefolder":
        folder = Path(spec["path"])
        if not folder.is_dir():
            raise DatasetConfigError(f"datasets.{name}.path: {folder} is not a folder")
        return [str(folder)]
    folder = raw_dir(spec, raw_root)
    inputs = []
    for remote in remote_files(spec):
        path = local_copy(folder, remote.filename) if spec.get("path") else folder / remote.filename
        if path is None:
            raise DatasetConfigError(f"datasets.{name}.path: {folder} holds no {remote.filename}")
        inputs.append(str(path))
    return inputs


def local_copy(folder: Path, filename: str) -> Path | None:
    """`folder/filename`, or its unpacked form (`x.h5` for `x.h5.gz`, as torchvision leaves PCam), or None."""
    candidates = [folder / filename]
    if filename.endswith(".h5.gz"):
        candidates.append(folder / filename.removesuffix(".gz"))
    return next((path for path in candidates if path.is_file()), None)


def resolve_datasets(datasets: dict) -> dict:
    """Resolve every entry of a study's `datasets`."""
    return {name: resolve_dataset(name, spec) for name, spec in datasets.items()}
