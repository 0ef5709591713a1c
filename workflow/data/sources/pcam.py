"""PatchCamelyon: 96x96 histopathology patches in HDF5, read by slices."""

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .base import DownloadedSource
from .catalogue import Catalogue, RemoteFile

URL = "https://zenodo.org/records/2546921/files/{}?download=1"
CLASS_NAMES = ["normal", "tumor"]
PART_SPLITS = {"train": "train", "valid": "val", "test": "test"}  # file name part -> split

# md5s of the .h5.gz files as in torchvision's datasets/pcam.py. The upstream
# PCam README lists the valid_x and test_x md5s swapped; these are right.
MD5 = {
    "camelyonpatch_level_2_split_train_x.h5.gz": "1571f514728f59376b705fc836ff4b63",
    "camelyonpatch_level_2_split_train_y.h5.gz": "35c2d7259d906cfc8143347bb8e05be7",
    "camelyonpatch_level_2_split_valid_x.h5.gz": "d5b63470df7cfa627aeec8b9dc0c066e",
    "camelyonpatch_level_2_split_valid_y.h5.gz": "2b85f58b927af9964a4c15b8f7e8f179",
    "camelyonpatch_level_2_split_test_x.h5.gz": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "camelyonpatch_level_2_split_test_y.h5.gz": "60a7035772fbdb7f34eb86d4420cf66a",
}


def _h5_name(part: str, xy: str) -> str:
    return f"camelyonpatch_level_2_split_{part}_{xy}.h5"


@dataclass(frozen=True)
class H5Reader:
    """Reads patches from the "x" datasets of several HDF5 files laid end to end."""

    paths: tuple[Path, ...]
    starts: tuple[int, ...]  # global index of each file's first patch

    def __call__(self, indices):
        out = [None] * len(indices)
        file_of = np.searchsorted(self.starts, indices, side="right") - 1
        for f in np.unique(file_of):
            where = np.flatnonzero(file_of == f)
            wanted, inverse = np.unique(indices[where] - self.starts[f], return_inverse=True)
            with h5py.File(self.paths[f], "r") as h5:
                if wanted[-1] - wanted[0] + 1 == len(wanted):
                    block = h5["x"][wanted[0] : wanted[-1] + 1]  # one contiguous slice
                else:
                    block = h5["x"][wanted]  # h5py reads increasing indices
            for pos, row in zip(where, inverse):
                out[pos] = block[row]
        return out


def ensure_unpacked(h5_path: Path) -> Path:
    """Return `h5_path`, first decompressing `<h5_path>.gz` next to it, atomically."""
    h5_path = Path(h5_path)
    if h5_path.exists():
        return h5_path
    archive = h5_path.with_name(h5_path.name + ".gz")
    if not archive.exists():
        raise FileNotFoundError(f"neither {h5_path} nor {archive} exists")
    partial = h5_path.with_name(h5_path.name + ".partial")
    with gzip.open(archive, "rb") as src, open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(partial, h5_path)
    return h5_path


class PCam(DownloadedSource):
    """The six .h5.gz files, downloaded or in a local copy (unpacked or not); its own three splits, or with
    `val_fraction` its train and test splits, val then carved out of train (PCam's valid split left out)."""

    DEFAULTS = {"path": None, "mirror": None, "checksums": {}, "shards": 8}
    OPTIONAL = ("val_fraction",)  # unset: PCam's own split (and the entries planned before it keep their keys)
    FILES = tuple(RemoteFile(URL.format(name), name, md5) for name, md5 in MD5.items())

    def open_catalogue(self, raw_dir: Path, spec: dict) -> Catalogue:
        """List the train/valid/test files (train/test with `val_fraction`); labels come from the `_y` files."""
        carve_val = bool(spec.get("val_fraction"))
        parts = {part: split for part, split in PART_SPLITS.items() if not (carve_val and split == "val")}
        paths, starts, labels, splits, keys = [], [], [], [], []
        for part, split in parts.items():
            x_path = ensure_unpacked(Path(raw_dir) / _h5_name(part, "x"))
            y_path = ensure_unpacked(Path(raw_dir) / _h5_name(part, "y"))
            with h5py.File(x_path, "r") as h5:
                n = h5["x"].shape[0]
            with h5py.File(y_path, "r") as h5:
                y = h5["y"][:].reshape(-1)  # stored as (N, 1, 1, 1)
            if len(y) != n:
                raise ValueError(f"{y_path} has {len(y)} labels for {n} patches in {x_path}")
            starts.append(len(keys))
            paths.append(x_path)
            labels.append(y.astype(np.int64))
            splits += [split] * n
            keys += [f"{x_path.name}[{i}]" for i in range(n)]
        return Catalogue(
            class_names=list(CLASS_NAMES),
            labels=np.concatenate(labels),
            splits=np.asarray(splits),
            keys=keys,
            reader=H5Reader(tuple(paths), tuple(starts)),
        )


PCAM = PCam()
