"""CIFAR-10 and CIFAR-100, read straight from the python-version tarballs."""

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import Catalog, RemoteFile


@dataclass(frozen=True)
class ArrayReader:
    """Reads images from an in-memory (N, H, W, 3) uint8 array."""

    images: np.ndarray

    def __call__(self, indices):
        return list(self.images[indices])


@dataclass(frozen=True)
class Cifar:
    """One CIFAR variant: its tarball, batch members and label keys."""

    remote: RemoteFile
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_keys: dict  # label_type -> (labels key, names key) in the pickles
    READS_RAW_FILES = True  # the plan reads the tarball from the raw folder (not a dataclass field)

    def remote_files(self, spec: dict) -> list[RemoteFile]:
        return [self.remote]

    def open_catalog(self, raw_dir: Path, spec: dict) -> Catalog:
        """Load all batches into memory; official train/test split, no val."""
        label_type = spec.get("label_type", "fine")
        if label_type not in self.label_keys:
            raise ValueError(f"label_type {label_type!r} not supported; use one of {sorted(self.label_keys)}")
        labels_key, names_key = self.label_keys[label_type]
        members = self._load(Path(raw_dir) / self.remote.filename)

        images, labels, splits, keys = [], [], [], []
        for split, names in (("train", self.train), ("test", self.test)):
            for name in names:
                batch = members[name]
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.extend(batch[labels_key])
                splits += [split] * len(data)
                keys += [f"{name}[{i}]" for i in range(len(data))]
        class_names = [name.decode() for name in members[self.meta][names_key]]
        return Catalog(
            class_names=class_names,
            labels=np.asarray(labels, dtype=np.int64),
            splits=np.asarray(splits),
            keys=keys,
            reader=ArrayReader(np.ascontiguousarray(np.concatenate(images))),
        )

    def _load(self, tarball: Path) -> dict:
        """Unpickle the wanted members in one pass over the tarball."""
        wanted = {f"{self.folder}/{name}": name for name in (*self.train, *self.test, self.meta)}
        members = {}
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    with tar.extractfile(member) as f:
                        members[wanted[member.name]] = pickle.load(f, encoding="bytes")
        missing = sorted(set(wanted.values()) - set(members))
        if missing:
            raise ValueError(f"{tarball}: missing members {missing} under {self.folder}/")
        return members


# URLs and md5s as in torchvision's datasets/cifar.py.
CIFAR10 = Cifar(
    remote=RemoteFile(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    meta="batches.meta",
    label_keys={"fine": (b"labels", b"label_names")},
)

CIFAR100 = Cifar(
    remote=RemoteFile(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
    folder="cifar-100-python",
    train=("train",),
    test=("test",),
    meta="meta",
    label_keys={"fine": (b"fine_labels", b"fine_label_names"), "coarse": (b"coarse_labels", b"coarse_label_names")},
)
