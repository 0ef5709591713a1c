"""A study's `datasets` entries: resolved with their source's defaults and checked, and the files
they download and are prepared from. Torch-free: the Snakefile imports it when it parses."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from workflow.data.sources import SOURCES, RemoteFile, get_source
from workflow.data.sources.base import DatasetConfigError, raw_dir

__all__ = ["COMMON", "DatasetConfigError", "check_sources", "configured_classes", "downloads", "resolve_dataset", "resolve_datasets", "source_fingerprint",
           "source_inputs", "source_raw_dir"]

# Keys every source takes, with their defaults.
COMMON = {"seed": 0, "classes": None, "per_class": None, "chunk_images": 64, "compression": "none"}
# Keys every source takes that are not filled in when absent (so that existing plans stay as they were).
UNFILLED = ("resize",)


def resolve_dataset(name: str, spec: dict) -> dict:
    """The entry with every key the source uses filled in; DatasetConfigError for a bad combination."""
    if spec["source"] not in SOURCES:
        raise DatasetConfigError(f"datasets.{name}.source: unknown source {spec['source']!r}; "
                                 f"known: {', '.join(SOURCES)}")
    source = SOURCES[spec["source"]]
    allowed = {"source", *COMMON, *UNFILLED, *source.DEFAULTS, *source.OPTIONAL}
    for key in spec:
        if key not in allowed:
            raise DatasetConfigError(f"datasets.{name}.{key}: not used by source {spec['source']!r}: "
                                     f"{source.why_not(key)}")
    resolved = {"source": spec["source"], **copy.deepcopy(COMMON), **copy.deepcopy(source.DEFAULTS),
                **copy.deepcopy(spec)}
    source.check(name, resolved)
    return resolved


# Classes of each source before `classes` selects some (cifar100: fine labels; coarse has 20).
SOURCE_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "pcam": 2, "cats_vs_dogs": 2}


def configured_classes(spec: dict) -> int | None:
    """How many classes a dataset entry has as its config says (its `classes`, else its source's); None
    when only its files can tell (an image folder, a table)."""
    if spec.get("classes"):
        return len(spec["classes"])
    if spec["source"] == "cifar100" and spec.get("label_type") == "coarse":
        return 20
    return SOURCE_CLASSES.get(spec["source"])


def resolve_datasets(datasets: dict) -> dict:
    """Resolve every entry of a study's `datasets`."""
    return {name: resolve_dataset(name, spec) for name, spec in datasets.items()}


def check_sources(datasets: dict) -> None:
    """The user's files each resolved entry reads (its folder or file, a table's rows), checked cheaply
    whenever a study loads, prepared or not: DatasetConfigError naming the key."""
    for name, spec in datasets.items():
        get_source(spec["source"]).check_files(name, spec)


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
        for remote in get_source(spec["source"]).remote_files(spec):
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
    return get_source(spec["source"]).inputs(name, spec, raw_root)


def source_fingerprint(name: str, spec: dict) -> str:
    """A digest of the user's files a resolved entry is read from ("" where its inputs are files):
    the plan rule's parameter, so that added, removed or edited files re-plan the dataset; a missing
    folder or file is an error naming the key."""
    return get_source(spec["source"]).fingerprint(name, spec)
