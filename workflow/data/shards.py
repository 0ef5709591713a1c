"""HDF5 shards of pre-resized images, and the manifest that joins a dataset's shards.

A shard file holds, for each split, ``<split>/images`` (uint8, N x H x W x 3,
chunked by blocks of consecutive images so that one read returns a block,
optionally compressed) and ``<split>/labels`` (int64, N); each dataset carries
the SHA-256 of its bytes as the attribute ``sha256``. The file's attributes
hold ``dataset``, ``resolution``, ``resize_method``, ``class_names`` (JSON),
``part`` and ``parts`` (shard i of n) and ``plan_sha256`` (the split
assignment it was written from); the scalar dataset ``skipped`` lists, as
JSON, the source images that could not be decoded. Readable with ``h5ls -r``.

A dataset prepared at one resolution is its shards plus a manifest (JSON)
listing them relative to itself; every reader here takes the manifest or a
single shard file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from workflow.atomic import atomic_path


class _SplitWriter:
    """Appends one split's images in whole chunks, hashing as it goes."""

    def __init__(self, group: h5py.Group, capacity: int, size: int, chunk_images: int, compression: str | None):
        chunk = (max(1, min(chunk_images, capacity)), size, size, 3)
        self.images = group.create_dataset("images", shape=(capacity, size, size, 3), maxshape=(None, size, size, 3),
                                           dtype="uint8", chunks=chunk, compression=compression)
        self.labels = group.create_dataset("labels", shape=(capacity,), maxshape=(None,), dtype="int64")
        self.chunk = chunk[0]
        self.count = 0
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.image_hash, self.label_hash = hashlib.sha256(), hashlib.sha256()

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.pending.append((images, labels.astype(np.int64)))
        if sum(len(p[1]) for p in self.pending) >= self.chunk:
            self._flush(whole_chunks=True)

    def _flush(self, whole_chunks: bool) -> None:
        if not self.pending:
            return
        if len(self.pending) == 1:
            images, labels = self.pending[0]
        else:
            images = np.concatenate([p[0] for p in self.pending])
            labels = np.concatenate([p[1] for p in self.pending])
        n = len(labels) - len(labels) % self.chunk if whole_chunks else len(labels)
        if n > len(self.labels) - self.count:
            raise ValueError(f"{self.images.name}: more images than the {len(self.labels)} planned")
        self.images[self.count:self.count + n] = images[:n]
        self.labels[self.count:self.count + n] = labels[:n]
        self.image_hash.update(np.ascontiguousarray(images[:n]).tobytes())
        self.label_hash.update(labels[:n].tobytes())
        self.count += n
        self.pending = [(images[n:], labels[n:])] if n < len(labels) else []

    def finish(self) -> None:
        self._flush(whole_chunks=False)
        self.images.resize(self.count, axis=0)
        self.labels.resize(self.count, axis=0)
        self.images.attrs["sha256"] = self.image_hash.hexdigest()
        self.labels.attrs["sha256"] = self.label_hash.hexdigest()


@contextlib.contextmanager
def shard_writer(path: str | os.PathLike, capacity: dict[str, int], size: int, attrs: dict,
                 chunk_images: int = 64, compression: str | None = None):
    """Yield {split: writer with .add(images, labels)} for a new shard file, written atomically.

    `capacity` bounds each split's count (skipped images make it smaller);
    `attrs` become the file's attributes, `skipped` (a list) its JSON dataset.
    """
    attrs = dict(attrs)
    skipped = attrs.pop("skipped", [])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        writers = {split: _SplitWriter(f.create_group(split), n, size, chunk_images, compression)
                   for split, n in capacity.items()}
        yield writers
        for writer in writers.values():
            writer.finish()
        f.create_dataset("skipped", data=json.dumps(skipped))


def shard_files(path: str | os.PathLike) -> list[Path]:
    """The shard files of a prepared dataset: those its manifest lists, or the shard file itself."""
    path = Path(path)
    if path.suffix == ".json":
        manifest = json.loads(path.read_text())
        return [path.parent / shard["file"] for shard in manifest["shards"]]
    return [path]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """The class names of a prepared dataset (its manifest or a shard file)."""
    path = Path(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())["class_names"]
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["class_names"])


def read_resize_method(path: str | os.PathLike) -> str:
    """How a prepared dataset's images were resized (its manifest's or shard file's `resize_method`)."""
    path = Path(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())["resize_method"]
    with h5py.File(path, "r") as f:
        return str(f.attrs["resize_method"])


def read_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's images (uint8 N x H x W x 3) and labels from every shard, in order, into memory."""
    files = shard_files(path)
    sizes, shape = [], None
    for file in files:
        with h5py.File(file, "r") as f:
            if split not in f:
                raise KeyError(f"{file}: no split {split!r} (has {sorted(k for k in f if k != 'skipped')})")
            sizes.append(len(f[split]["labels"]))
            shape = f[split]["images"].shape[1:]
    images = np.empty((sum(sizes), *shape), np.uint8)
    labels = np.empty(sum(sizes), np.int64)
    start = 0
    for file, n in zip(files, sizes):
        with h5py.File(file, "r") as f:
            if n:
                f[split]["images"].read_direct(images, dest_sel=np.s_[start:start + n])
                f[split]["labels"].read_direct(labels, dest_sel=np.s_[start:start + n])
        start += n
    return images, labels


def verify_shard(path: str | os.PathLike) -> dict:
    """Re-hash every split of a shard against its recorded SHA-256s; return its attributes,
    split sizes, checksums and skipped list. ValueError names the file and split that differ."""
    with h5py.File(path, "r") as f:
        info = {"attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
                "skipped": json.loads(f["skipped"][()]), "splits": {}}
        for split in (k for k in f if k != "skipped"):
            images, labels = f[split]["images"], f[split]["labels"]
            digest = hashlib.sha256()
            step = images.chunks[0] * 16
            for start in range(0, len(images), step):
                digest.update(images[start:start + step].tobytes())
            found = {"images": digest.hexdigest(), "labels": hashlib.sha256(labels[...].tobytes()).hexdigest()}
            for name, value in found.items():
                expected = f[split][name].attrs["sha256"]
                if value != expected:
                    raise ValueError(f"{path}: {split}/{name} has sha256 {value}, expected {expected}")
            info["splits"][split] = {"count": len(labels), "sha256": found,
                                     "label_counts": np.bincount(labels[...]).tolist()}
    return info
