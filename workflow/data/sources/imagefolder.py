"""A local folder of images: one sub-folder per class, optionally under train/ val/ test/."""

import os
from pathlib import Path

import numpy as np

from .base import DatasetConfigError, Source
from .catalogue import Catalogue
from .images import FileReader, PathReader, ignore_reason
from .listing import Listing, folder_record, list_folder

SPLIT_FOLDERS = ("train", "val", "test")


def class_folders(root: Path, listing: Listing) -> dict[str, list[str]]:
    """{split folder ("" without them): its class folders}, relative to `root`; a level without class
    folders is an error naming it."""
    top = [folder for folder in listing.folders if "/" not in folder]
    if top and set(top) <= set(SPLIT_FOLDERS):
        groups = {split: [f for f in listing.folders if f.count("/") == 1 and f.startswith(f"{split}/")]
                  for split in top}
    else:
        groups = {"": top}
    for split, folders in groups.items():
        if not folders:
            raise ValueError(f"{root / split} has no class sub-folders")
    return groups


def class_images(root: Path, listing: Listing, class_dir: str, ignored: list) -> list[str]:
    """The image files under `class_dir` (recursively), as paths relative to `root`; the other files go
    to `ignored`. A class folder that cannot be read or holds no image is an error naming it."""
    inside = [entry for entry in listing.unreadable if entry == class_dir or entry.startswith(f"{class_dir}/")]
    if inside:
        raise ValueError(f"class folder {root / inside[0]} cannot be read ({listing.unreadable[inside[0]]}); make it "
                         f"readable (chmod -R u+rX) or move it out of the dataset's folder")
    images = []
    for key in (key for key in listing.files if key.startswith(f"{class_dir}/")):
        if reason := ignore_reason(key.removeprefix(f"{class_dir}/")):
            ignored.append({"file": key, "reason": reason})
        else:
            images.append(key)
    if not images:
        raise ValueError(f"class folder {root / class_dir} holds no image files; add images or move it out of the "
                         "dataset's folder")
    return images


def existing_folder(name: str, spec: dict) -> Path:
    """The entry's `path`; one that is not a folder, or cannot be read, is an error naming the key."""
    folder = Path(spec["path"])
    if not folder.is_dir():
        raise DatasetConfigError(f"datasets.{name}.path: {folder} is not a folder")
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
    except OSError as error:
        raise DatasetConfigError(f"datasets.{name}.path: {folder} cannot be read ({error.strerror}); make it "
                                 "readable") from None
    return folder


class ImageFolder(Source):
    """A folder named by `path`: nothing downloaded; the plan records every visible file with its size
    and modification time, and shards read the plan's files by path."""

    DEFAULTS = {"path": None, "split": {"train": 0.8, "val": 0.1, "test": 0.1}, "val_fraction": 0.1, "shards": 1}
    DECODES = True

    def open_catalogue(self, raw_dir: Path | None, spec: dict) -> Catalogue:
        """List `spec["path"]`; `splits` is filled when it has train/ val/ test/ sub-folders. Only regular
        files (and links to them) are read; special files and links to nothing are listed as ignored."""
        root = Path(spec["path"])
        if not root.is_dir():
            raise ValueError(f"image folder {root} does not exist or is not a folder")
        listing = list_folder(root)
        groups = class_folders(root, listing)
        in_class = tuple(f"{folder}/" for folders in groups.values() for folder in folders)
        ignored = [entry for entry in listing.others if entry["file"] not in listing.unreadable]
        ignored += [{"file": key, "reason": "not in a class folder"} for key in listing.files
                    if not key.startswith(in_class)]
        class_names = sorted({folder.rsplit("/", 1)[-1] for folders in groups.values() for folder in folders})
        keys, labels, splits = [], [], []
        for split, folders in groups.items():
            for class_dir in folders:
                images = class_images(root, listing, class_dir, ignored)
                keys += images
                labels += [class_names.index(class_dir.rsplit("/", 1)[-1])] * len(images)
                splits += [split] * len(images)
        return Catalogue(
            class_names=class_names,
            labels=np.asarray(labels, dtype=np.int64),
            splits=np.asarray(splits),
            keys=keys,
            reader=FileReader(root, tuple(keys)),
            ignored=ignored,
            sources=[folder_record(root, listing)],
        )

    def check(self, name: str, spec: dict) -> None:
        """`path` is given."""
        if not spec["path"]:
            raise DatasetConfigError(f"datasets.{name}.path: source 'imagefolder' needs the folder of images")
        super().check(name, spec)

    def check_files(self, name: str, spec: dict) -> None:
        """`path` is a folder that can be read."""
        existing_folder(name, spec)

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
