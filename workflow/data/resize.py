"""Resizing images once, in batches, to a study's resolution.

Method: bilinear interpolation with antialiasing when shrinking, half-pixel
centres (``align_corners=False``), on uint8 channels-last tensors: torch's
``interpolate(..., mode="bilinear", antialias=True)``, whose uint8 kernel is
written to match Pillow's ``Image.resize(size, Image.BILINEAR)``; tests compare
the two. Images become size x size: the aspect ratio is not kept (as Keras'
``image_dataset_from_directory`` does by default).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_METHOD = "bilinear, antialiased, align_corners=False, uint8 (matches Pillow BILINEAR); aspect ratio not kept"


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images (N, H, W) or (N, H, W, 3) to RGB (N, size, size, 3)."""
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] == (size, size) or len(images) == 0:
        return np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), size, size, 3)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).permute(0, 3, 1, 2)  # channels-last view
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def resize_images(images: list[np.ndarray], size: int) -> np.ndarray:
    """Resize RGB uint8 images of any sizes to (N, size, size, 3); equal sizes go through together."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for positions in by_shape.values():
        out[positions] = resize_batch(np.stack([images[i] for i in positions]), size)
    return out
