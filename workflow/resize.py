"""Resizing images once, in batches, to a study's resolution.

Method: bilinear interpolation with antialiasing when shrinking, half-pixel
centres (``align_corners=False``), computed in float32 and rounded to uint8.
This is torch's ``interpolate(..., mode="bilinear", antialias=True)``, which
follows Pillow's ``Image.resize(size, Image.BILINEAR)``; tests compare the two.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_METHOD = "bilinear, antialiased, align_corners=False (matches Pillow BILINEAR)"


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images (N, H, W) or (N, H, W, 3) to RGB (N, size, size, 3)."""
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images, dtype=np.uint8)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
