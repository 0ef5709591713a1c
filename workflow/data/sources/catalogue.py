"""A source's catalogue of its images: class names, labels, splits, keys, and a reader of images
(not the model catalogue, workflow/core/catalogue.py)."""

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

CATALOGUE_SPLITS = ("train", "val", "test", "")  # "" where the source defines no split


@dataclass(frozen=True)
class RemoteFile:
    """A file to download into the raw folder; md5 None where none is published."""

    url: str
    filename: str
    md5: str | None = None


@dataclass(frozen=True)
class Skipped:
    """An entry whose image could not be decoded."""

    key: str
    reason: str


@dataclass
class Catalogue:
    """Every entry of a source, listed without decoding images.

    `splits` holds "train", "val" or "test" where the source defines the
    split and "" where it does not. `reader` maps an int64 index array to
    RGB uint8 arrays (H, W, 3) or Skipped, in order. `groups` (or None) holds
    each entry's group, kept together in one split; `sources` what the listing
    was made from (workflow.data.sources.listing).
    """

    class_names: list[str]
    labels: np.ndarray
    splits: np.ndarray
    keys: list[str]
    reader: Callable[[np.ndarray], list] = field(repr=False)
    ignored: list[dict] = field(default_factory=list)
    groups: np.ndarray | None = None
    sources: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.splits = np.asarray(self.splits, dtype="<U5")
        n = len(self.keys)
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=str)
        if self.labels.shape != (n,) or self.splits.shape != (n,) or (self.groups is not None
                                                                        and self.groups.shape != (n,)):
            raise ValueError(f"catalogue of {n} keys has {self.labels.shape} labels and {self.splits.shape} splits")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels outside 0..{len(self.class_names) - 1}")
        unknown = set(np.unique(self.splits)) - set(CATALOGUE_SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}")

    def __len__(self):
        return len(self.keys)

    def read(self, indices) -> list:
        """Images at `indices`, in order: RGB uint8 (H, W, 3) arrays or Skipped."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"indices must lie in 0..{len(self) - 1}")
        return self.reader(indices) if len(indices) else []
