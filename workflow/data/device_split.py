"""A split loaded whole onto the device: batches are slices of a seeded permutation, gathered where
the images live (airbench's data path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workflow.data.shards import read_split


def gather_rows(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """images[index] along the first axis (numpy's take on the CPU, much faster than torch's there)."""
    if images.device.type == "cpu":
        return torch.from_numpy(np.take(images.numpy(), index.numpy(), axis=0))
    return images[index.to(images.device)]


@dataclass
class DeviceSplit:
    """A split's images (uint8, stored N x H x W x 3) and labels, whole on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def load(cls, path: str | Path, split: str, device: torch.device) -> "DeviceSplit":
        """Load a split from a prepared dataset's manifest or a shard file."""
        images, labels = read_split(path, split)
        if len(images) == 0:
            raise ValueError(f"{path}: split {split!r} is empty")
        return cls(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device))

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0):
        """An iterator of (uint8 images N x 3 x H x W, labels); shuffled with `generator`, in order
        without. The order is drawn at the call; the first `skip` batches are left out (a resumed epoch)."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else None
        return self._batches(order, batch_size, skip)

    def _batches(self, order: torch.Tensor | None, batch_size: int, skip: int):
        for start in range(skip * batch_size, len(self), batch_size):
            if order is None:
                images, labels = self.images[start:start + batch_size], self.labels[start:start + batch_size]
            else:
                index = order[start:start + batch_size]
                images, labels = gather_rows(self.images, index), self.labels[index.to(self.labels.device)]
            yield images.permute(0, 3, 1, 2), labels
