"""The interface every dataset source implements, and what the downloaded sources share.

A source owns the keys it takes besides the common ones (`DEFAULTS`), its rules
for an entry (`check`), the files it downloads (`remote_files`), the files an
entry is prepared from (`inputs`), the plan's record of what it was made from
(`source_records`), the Catalogue of its images (`open_catalogue`), the digest of
its files a changed source is noticed by (`fingerprint`), the cheap check of the
user's files whenever a study loads (`check_files`) and how a shard reads the
plan's images (`plan_reader`). Errors in an
entry are DatasetConfigErrors that name the key, as `datasets.<name>.<key>: ...`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from workflow.data.download import ChecksumError, size_and_digests

from .catalogue import Catalogue, RemoteFile


class DatasetConfigError(ValueError):
    """A dataset entry that passes the schema but not the source's rules; names the key."""


# Why a source does not take a key that other sources take (a source may give a reason of its own).
NOT_FOR = {
    "split": "the source comes with its own split (cifar: train/test, carve val with val_fraction; pcam: all three, "
             "or val carved out of its train split with val_fraction)",
    "val_fraction": "only sources with a train/test split and no validation split use it (cifar10, cifar100, "
                    "imagefolder with train/ and test/ folders), and pcam to carve val out of its train split",
    "label_type": "only cifar100 has label types (fine, coarse)",
    "mirror": "nothing is downloaded for this source",
    "checksums": "nothing is downloaded for this source",
    "root": "only csv tables name files relative to a root",
    "path_column": "only csv tables have a path column",
    "label_column": "only csv tables and hf datasets have a label column",
    "split_column": "only csv tables have a split column",
    "group_column": "only csv tables have a group column",
    "image_column": "only hf datasets have an image column",
}


def raw_dir(spec: dict, raw_root: str | Path) -> Path:
    """The folder that holds a resolved entry's source files: its `path`, or `<raw_root>/<source>`."""
    return Path(spec["path"]) if spec.get("path") else Path(raw_root) / spec["source"]


def local_copy(folder: Path, filename: str) -> Path | None:
    """`folder/filename`, or its unpacked form (`x.h5` for `x.h5.gz`, as torchvision leaves PCam), or None."""
    candidates = [folder / filename]
    if filename.endswith(".h5.gz"):
        candidates.append(folder / filename.removesuffix(".gz"))
    return next((path for path in candidates if path.is_file()), None)


class Source(ABC):
    """A dataset source; the methods take a resolved entry (`spec`) and `name`, its key in `datasets`."""

    DEFAULTS: dict = {}  # keys this source takes besides the common ones, with its defaults (None: no default)
    OPTIONAL: tuple[str, ...] = ()  # keys it also takes that stay out of a resolved entry when unset
    READS_RAW_FILES = False  # whether the plan reads source files from the raw folder (or the entry's local copy)
    FILES: tuple[RemoteFile, ...] = ()  # the files it downloads, as published
    REFUSED: dict = {}  # reasons of its own for keys it does not take
    DECODES = False  # whether its images may fail to decode (the plan then decodes them before splitting)

    def why_not(self, key: str) -> str:
        """Why this source does not take `key`."""
        return self.REFUSED.get(key) or NOT_FOR[key]

    def remote_files(self, spec: dict) -> list[RemoteFile]:
        """The files the entry downloads: `FILES` with its `mirror` and `checksums` applied."""
        mirror, checksums = spec.get("mirror"), spec.get("checksums") or {}
        return [
            RemoteFile(f"{mirror.rstrip('/')}/{f.filename}" if mirror else f.url, f.filename,
                       checksums.get(f.filename, f.md5))
            for f in self.FILES
        ]

    @abstractmethod
    def open_catalogue(self, raw_dir: Path | None, spec: dict) -> Catalogue:
        """Every image of the source, listed without decoding."""

    def check(self, name: str, spec: dict) -> None:
        """The source's rules for a resolved entry: here, that `split` fractions add up to 1."""
        if "split" in spec:
            total = sum(spec["split"].values())
            if abs(total - 1.0) > 1e-6:
                raise DatasetConfigError(f"datasets.{name}.split: fractions add up to {total:g}, not 1")

    def check_files(self, name: str, spec: dict) -> None:
        """The user's files the entry reads, checked cheaply whenever a study loads, prepared or not
        (nothing here: a downloaded file is checked when it is downloaded)."""

    def inputs(self, name: str, spec: dict, raw_root: str | Path) -> list[str]:
        """The files an entry is prepared from (none here)."""
        return []

    def source_records(self, spec: dict, raw_dir: Path | None) -> list[dict]:
        """What the plan records of the files it was made from, checked before it lists them (nothing here)."""
        return []

    def fingerprint(self, name: str, spec: dict) -> str:
        """A digest of what the entry is read from, when that is not a file the plan rule takes as input
        (none here: downloaded files are inputs)."""
        return ""

    def plan_reader(self, plan: dict):
        """A function from a list of the plan's keys to their images (RGB arrays or Skipped): here the
        source is listed again and each key found by name (an int, from a plan older than keys, is a
        position); a key it no longer has is an error."""
        catalogue = self.open_catalogue(Path(plan["raw_dir"]) if plan["raw_dir"] else None, plan["spec"])
        position = {key: i for i, key in enumerate(catalogue.keys)}

        def read(keys):
            missing = [key for key in keys if not isinstance(key, int) and key not in position]
            if missing:
                raise ValueError(f"datasets.{plan['dataset']}: {missing[0]} is in the plan but not in the "
                                 "source; the source changed since it was planned (re-run the plan)")
            return catalogue.read([key if isinstance(key, int) else position[key] for key in keys])
        return read


class DownloadedSource(Source):
    """A source whose files are downloaded into the raw folder, or found in a local copy (`path`)."""

    READS_RAW_FILES = True

    def check(self, name: str, spec: dict) -> None:
        """No `mirror` with `path`, and `checksums` only for files the source has."""
        if spec.get("path") and spec.get("mirror"):
            raise DatasetConfigError(f"datasets.{name}.mirror: not used together with path (a local copy is not downloaded)")
        super().check(name, spec)
        if spec.get("checksums"):
            names = [f.filename for f in self.FILES]
            unknown = sorted(set(spec["checksums"]) - set(names))
            if unknown:
                raise DatasetConfigError(f"datasets.{name}.checksums: {spec['source']} has no file {unknown[0]!r} "
                                         f"(its files: {', '.join(names)})")

    def check_files(self, name: str, spec: dict) -> None:
        """A local copy (`path`) holds every file of the source."""
        if spec.get("path"):
            self.inputs(name, spec, "")

    def inputs(self, name: str, spec: dict, raw_root: str | Path) -> list[str]:
        """The downloaded files, or those of the local copy; one it lacks is an error naming `path`."""
        folder = raw_dir(spec, raw_root)
        inputs = []
        for remote in self.remote_files(spec):
            path = local_copy(folder, remote.filename) if spec.get("path") else folder / remote.filename
            if path is None:
                raise DatasetConfigError(f"datasets.{name}.path: {folder} holds no {remote.filename}")
            inputs.append(str(path))
        return inputs

    def source_records(self, spec: dict, raw_dir: Path) -> list[dict]:
        """Size and digests of each file in `raw_dir`; ChecksumError where a published or configured
        md5 differs (names the file, the expected and the found digest)."""
        records = []
        for remote in self.remote_files(spec):
            path = local_copy(raw_dir, remote.filename)
            if path is None:
                raise FileNotFoundError(f"{raw_dir / remote.filename} does not exist")
            digests = size_and_digests(path)
            verified = remote.md5 is not None and path.name == remote.filename
            if verified and digests["md5"] != remote.md5.lower():
                raise ChecksumError(path, "md5", remote.md5, digests["md5"])
            records.append({"file": str(path), **digests, "md5_expected": remote.md5, "verified": verified})
        return records
