"""uint8 batches into normalised, augmented float batches on the device."""

from __future__ import annotations

import torch

from workflow.data.augment import Augment


class Normalizer:
    """uint8 batches -> float batches normalised by the weights' mean and std (channels-last),
    augmented by `augment` (a `training.augment` dict) when called with a generator."""

    def __init__(self, mean, std, device: torch.device, augment: dict | None = None):
        self.scale = 1 / (torch.tensor(std, dtype=torch.float32, device=device) * 255)
        self.bias = -torch.tensor(mean, dtype=torch.float32, device=device) * 255 * self.scale
        self.augment = Augment.from_config(augment)
        self.rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None or not self.augment.active:
            return self.normalize(images)
        params = self.augment.draw(len(images), generator)
        return self.augment.geometric(self.normalize(images, params.flips), params)

    def normalize(self, images: torch.Tensor, flips: int = 0) -> torch.Tensor:
        """Convert (N, 3, H, W) uint8 to normalised float, mirroring the first `flips` images.

        One conversion pass (mirroring within it) and one multiply-add pass
        over rows of H x (W x 3) values, both vectorised.
        """
        n, c, h, w = images.shape
        pixels = images.permute(0, 2, 3, 1)  # N x H x W x 3: contiguous for channels-last input
        out = torch.empty((n, h, w, c), dtype=torch.float32, device=images.device)
        out[:flips].copy_(pixels[:flips].flip(2))
        out[flips:].copy_(pixels[flips:])
        if w not in self.rows:
            self.rows[w] = (self.scale.repeat(w).view(1, 1, w * c), self.bias.repeat(w).view(1, 1, w * c))
        scale, bias = self.rows[w]
        rows = out.view(n, h, w * c)
        torch.addcmul(bias, rows, scale, out=rows)
        return out.permute(0, 3, 1, 2)
