"""Resizing images once, in batches, to a study's resolution.

Method: bilinear interpolation with antialiasing when shrinking, half-pixel
centres (``align_corners=False``), on uint8 channels-last tensors: torch's
``interpolate(..., mode="bilinear", antialias=True)``, whose uint8 kernel is
written to match Pillow's ``Image.resize(size, Image.BILINEAR)``; tests compare
the two. Images become size x size in one of two modes, chosen per dataset (its `resize` key):
``stretch`` (the default) does not keep the aspect ratio (as Keras' ``image_dataset_from_directory``
does by default); ``crop`` resizes the shorter side to size and keeps the centre square, as
torchvision's evaluation presets do (``Resize(size)`` then ``CenterCrop(size)``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_METHOD = "bilinear, antialiased, align_corners=False, uint8 (matches Pillow BILINEAR); aspect ratio not kept"
CROP_METHOD = ("bilinear, antialiased, align_corners=False, uint8 (matches Pillow BILINEAR); shorter side to size, "
               "then centre crop (torchvision Resize(size) + CenterCrop(size))")
RESIZE_METHODS = {"stretch": RESIZE_METHOD, "crop": CROP_METHOD}  # a dataset's `resize` mode: its recorded method


def resize_mode_of(method: str) -> str:
    """The mode (stretch or crop) whose recorded method (a manifest's, checkpoint's or preprocess.json's) is `method`."""
    for mode, recorded in RESIZE_METHODS.items():
        if recorded == method:
            return mode
    raise ValueError(f"resize method {method!r} is not one this version prepares images with")


def crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Mode crop: (resized height, resized width, top, left) as torchvision's Resize(size) (shorter
    side to size, longer side truncated) and CenterCrop(size) (offsets rounded) compute them."""
    short, long = min(height, width), max(height, width)
    long = int(size * long / short)
    resized = (size, long) if height <= width else (long, size)
    return (*resized, int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0)))


def resize_batch(images: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """Resize uint8 images (N, H, W) or (N, H, W, 3) to RGB (N, size, size, 3), in `mode` stretch or crop."""
    if mode not in RESIZE_METHODS:
        raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_METHODS)}")
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] == (size, size) or len(images) == 0:
        return np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), size, size, 3)
    height, width, top, left = crop_box(*images.shape[1:3], size) if mode == "crop" else (size, size, 0, 0)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).permute(0, 3, 1, 2)  # channels-last view
    y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return y[:, :, top:top + size, left:left + size].permute(0, 2, 3, 1).contiguous().numpy()


def resize_images(images: list[np.ndarray], size: int, mode: str = "stretch") -> np.ndarray:
    """Resize RGB uint8 images of any sizes to (N, size, size, 3) in `mode`; equal sizes go through together."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for positions in by_shape.values():
        out[positions] = resize_batch(np.stack([images[i] for i in positions]), size, mode)
    return out
