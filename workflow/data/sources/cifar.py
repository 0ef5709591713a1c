"""CIFAR-10 and CIFAR-100, read straight from the python-version tarballs."""

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DownloadedSource
from .catalogue import Catalogue, RemoteFile


@dataclass(frozen=True)
class ArrayReader:
    """Reads images from an in-memory (N, H, W, 3) uint8 array."""

    images: np.ndarray

    def __call__(self, indices):
        return list(self.images[indices])


class Cifar(DownloadedSource):
    """A CIFAR variant: its tarball (downloaded or in a local copy), batch members and label keys."""

    FOLDER: str  # the folder of the pickles inside the tarball
    TRAIN: tuple[str, ...]
    TEST: tuple[str, ...]
    META: str
    LABEL_KEYS: dict  # label_type -> (labels key, names key) in the pickles

    def open_catalogue(self, raw_dir: Path, spec: dict) -> Catalogue:
        """Load all batches into memory; official train/test split, no val."""
        label_type = spec.get("label_type", "fine")
        if label_type not in self.LABEL_KEYS:
            raise ValueError(f"label_type {label_type!r} not supported; use one of {sorted(self.LABEL_KEYS)}")
        labels_key, names_key = self.LABEL_KEYS[label_type]
        members = self._unpickle(Path(raw_dir) / self.FILES[0].filename)

        images, labels, splits, keys = [], [], [], []
        for split, names in (("train", self.TRAIN), ("test", self.TEST)):
            for name in names:
                batch = members[name]
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.extend(batch[labels_key])
                splits += [split] * len(data)
                keys += [f"{name}[{i}]" for i in range(len(data))]
        class_names = [name.decode() for name in members[self.META][names_key]]
        return Catalogue(
            class_names=class_names,
            labels=np.asarray(labels, dtype=np.int64),
            splits=np.asarray(splits),
            keys=keys,
            reader=ArrayReader(np.ascontiguousarray(np.concatenate(images))),
        )

    def _unpickle(self, tarball: Path) -> dict:
        """Unpickle the wanted members in one pass over the tarball."""
        wanted = {f"{self.FOLDER}/{name}": name for name in (*self.TRAIN, *self.TEST, self.META)}
        members = {}
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    with tar.extractfile(member) as f:
                        members[wanted[member.name]] = pickle.load(f, encoding="bytes")
        missing = sorted(set(wanted.values()) - set(members))
        if missing:
            raise ValueError(f"{tarball}: missing members {missing} under {self.FOLDER}/")
        return members


# URLs and md5s as in torchvision's datasets/cifar.py.
class Cifar10(Cifar):
    DEFAULTS = {"path": None, "mirror": None, "checksums": {}, "val_fraction": 0.1, "shards": 4}
    FILES = (RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                        "c58f30108f718f92721af3b95e74349a"),)
    FOLDER = "cifar-10-batches-py"
    TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
    TEST = ("test_batch",)
    META = "batches.meta"
    LABEL_KEYS = {"fine": (b"labels", b"label_names")}


class Cifar100(Cifar):
    DEFAULTS = {"path": None, "mirror": None, "checksums": {}, "val_fraction": 0.1, "label_type": "fine",
                "shards": 4}
    FILES = (RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85"),)
    FOLDER = "cifar-100-python"
    TRAIN = ("train",)
    TEST = ("test",)
    META = "meta"
    LABEL_KEYS = {"fine": (b"fine_labels", b"fine_label_names"), "coarse": (b"coarse_labels", b"coarse_label_names")}


CIFAR10 = Cifar10()
CIFAR100 = Cifar100()
