"""A local folder of images: one sub-folder per class, optionally under train/ val/ test/."""

from pathlib import Path

import numpy as np

from .base import DatasetConfigError, Source
from .catalogue import Catalogue
from .images import FileReader, PathReader, ignore_reason
from .listing import file_stats, folder_record, listing_record

SPLIT_FOLDERS = ("train", "val", "test")


def _subfolders(folder: Path, root: Path, ignored: list) -> list[Path]:
    """Visible sub-folders; loose files and hidden folders go to `ignored`."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            ignored.append({"file": entry.relative_to(root).as_posix(), "reason": "hidden file"})
        elif entry.is_dir():
            found.append(entry)
        else:
            ignored.append({"file": entry.relative_to(root).as_posix(), "reason": "not in a class folder"})
    return found


def _list_images(class_dir: Path, root: Path, ignored: list) -> list[str]:
    """Image files under `class_dir` (recursively), as paths relative to `root`."""
    images = []
    for path in sorted(class_dir.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_dir():
            continue
        if reason := ignore_reason(path.relative_to(class_dir).as_posix()):
            ignored.append({"file": key, "reason": reason})
        else:
            images.append(key)
    if not images:
        raise ValueError(f"class folder {class_dir} holds no image files")
    return images


def existing_folder(name: str, spec: dict) -> Path:
    """The entry's `path`; one that is not a folder is an error naming the key."""
    folder = Path(spec["path"])
    if not folder.is_dir():
        raise DatasetConfigError(f"datasets.{name}.path: {folder} is not a folder")
    return folder


def listed_record(root: Path, keys: list[str], ignored: list[dict]) -> dict:
    """`folder_record` of the folder from its listing (the images and the visible files it ignored),
    so that the folder is listed once."""
    visible = keys + [entry["file"] for entry in ignored if entry["reason"] != "hidden file"]
    return listing_record("folder", str(root), file_stats(root, sorted(visible)))


class ImageFolder(Source):
    """A folder named by `path`: nothing downloaded; the plan records every visible file with its size
    and modification time, and shards read the plan's files by path."""

    DEFAULTS = {"path": None, "split": {"train": 0.8, "val": 0.1, "test": 0.1}, "val_fraction": 0.1, "shards": 1}
    DECODES = True

    def open_catalogue(self, raw_dir: Path | None, spec: dict) -> Catalogue:
        """List `spec["path"]`; `splits` is filled when it has train/ val/ test/ sub-folders."""
        root = Path(spec["path"])
        if not root.is_dir():
            raise ValueError(f"image folder {root} does not exist or is not a folder")
        ignored = []
        top = _subfolders(root, root, ignored)
        if top and {d.name for d in top} <= set(SPLIT_FOLDERS):
            groups = {d.name: _subfolders(d, root, ignored) for d in top}
        else:
            groups = {"": top}
        for folder, class_dirs in groups.items():
            if not class_dirs:
                raise ValueError(f"{root / folder} has no class sub-folders")

        class_names = sorted({d.name for class_dirs in groups.values() for d in class_dirs})
        keys, labels, splits = [], [], []
        for split, class_dirs in groups.items():
            for class_dir in class_dirs:
                images = _list_images(class_dir, root, ignored)
                keys += images
                labels += [class_names.index(class_dir.name)] * len(images)
                splits += [split] * len(images)
        return Catalogue(
            class_names=class_names,
            labels=np.asarray(labels, dtype=np.int64),
            splits=np.asarray(splits),
            keys=keys,
            reader=FileReader(root, tuple(keys)),
            ignored=ignored,
            sources=[listed_record(root, keys, ignored)],
        )

    def check(self, name: str, spec: dict) -> None:
        """`path` is given."""
        if not spec["path"]:
            raise DatasetConfigError(f"datasets.{name}.path: source 'imagefolder' needs the folder of images")
        super().check(name, spec)

    def inputs(self, name: str, spec: dict, raw_root) -> list[str]:
        """None (the folder's mtime changes with hidden files too: its `fingerprint` is what counts); a
        folder that is not there is an error naming `path`."""
        existing_folder(name, spec)
        return []

    def fingerprint(self, name: str, spec: dict) -> str:
        """The digest of every visible file under the folder, with sizes and modification times."""
        return folder_record(existing_folder(name, spec))["fingerprint"]

    def plan_reader(self, plan: dict) -> PathReader:
        """The plan's files, read by path (the folder is not listed again)."""
        return PathReader(Path(plan["spec"]["path"]))


IMAGEFOLDER = ImageFolder()
