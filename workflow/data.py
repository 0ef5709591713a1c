"""Serve a prepared split as normalised training batches, kept on the device.

The split's uint8 images are moved to the device once; each batch is a slice
of a seeded permutation, flipped and normalised there (airbench's data path).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from workflow.shards import read_split


@dataclass
class DeviceSplit:
    """A split's images (uint8, N x 3 x H x W) and labels on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def load(cls, shard: str | Path, split: str, device: torch.device) -> "DeviceSplit":
        images, labels = read_split(shard, split)
        if len(images) == 0:
            raise ValueError(f"{shard}: split {split!r} is empty")
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        return cls(tensor.to(device), torch.from_numpy(labels).to(device))

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield (uint8 images, labels); shuffled with `generator`, in order without."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.labels[index]


class Normalizer:
    """uint8 batch -> float batch normalised by the weights' mean and std, optional flips."""

    def __init__(self, mean, std, device: torch.device):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: torch.Tensor, hflip_generator: torch.Generator | None = None) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        if hflip_generator is not None:
            flip = torch.rand(len(x), generator=hflip_generator) < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
        return x.contiguous(memory_format=torch.channels_last)
