"""HDF5 shards of pre-resized images: one file per (dataset, resolution).

Layout: a group per split (``train``, ``val``, ``test``) holding ``images``
(uint8, N x H x W x 3, chunked by blocks of consecutive images) and ``labels``
(int64, N); the file's attributes hold ``class_names`` (JSON), ``resolution``
and ``resize_method``; each ``images`` dataset carries the SHA-256 of its
bytes as the attribute ``sha256``. Readable with ``h5ls -r`` and ``h5dump``.
"""

from __future__ import annotations

import hashlib
import json
import os

import h5py
import numpy as np

from workflow.atomic import atomic_path

CHUNK_IMAGES = 256


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's raw bytes."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_shard(
    path: str | os.PathLike,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    attrs: dict,
    compression: str | None = None,
) -> None:
    """Write split name -> (images, labels) to an HDF5 file, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["class_names"] = json.dumps(class_names)
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, (images, labels) in splits.items():
            group = f.create_group(name)
            chunk = (max(1, min(CHUNK_IMAGES, len(images))),) + images.shape[1:]
            data = group.create_dataset(
                "images", data=images, dtype="uint8", chunks=chunk, compression=compression
            )
            data.attrs["sha256"] = array_sha256(images)
            group.create_dataset("labels", data=labels.astype(np.int64))


def read_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split's images (uint8 N x H x W x 3) and labels into memory."""
    with h5py.File(path, "r") as f:
        if split not in f:
            raise KeyError(f"{path}: no split {split!r} (has {sorted(f)})")
        return f[split]["images"][...], f[split]["labels"][...]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """The class names stored in a shard file."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["class_names"])
