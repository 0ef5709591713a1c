"""Augmentation of whole batches on the device, drawn from a seeded generator.

Random horizontal and vertical flips, random turns by multiples of 90 degrees
(``rot90``, square images), random crops of a padded image back to its size
(``crop`` pixels of padding, by index arithmetic), and random affine
transforms (``shift`` as a fraction of the size, ``zoom`` as a relative scale
change, one for both axes or, with ``zoom_axes: independent``, one per axis as
Keras's ``zoom_range``, ``rotation`` and ``shear`` in degrees) by ``affine_grid``/``grid_sample``. Pixels
from outside the image are filled by ``fill``: ``reflect`` (mirror, the edge
not repeated), ``edge`` (nearest edge pixel) or ``zeros`` (0 after
normalisation: the weights' mean colour). Random numbers are drawn on the CPU
from the generator passed in, so a seed gives the same batches on any device.

Flips are applied by ``workflow.data.normalize.Normalizer`` while it converts to float:
the number k of mirrored images is drawn as one fair coin per image, and the
first k images of the batch are mirrored. Training batches come in random
order, so this is the same as mirroring each image on its own coin, done in
two large copies instead of one small one per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

GRID_PADDING = {"reflect": "reflection", "edge": "border", "zeros": "zeros"}
ZOOM_AXES = ("same", "independent")


@dataclass(frozen=True)
class Params:
    """One batch's random draws (CPU tensors; None where that augmentation is off)."""

    flips: int = 0  # mirror the first `flips` images
    crop: torch.Tensor | None = None  # (N, 2) top and left offsets into the padded image, 0..2 x crop
    theta: torch.Tensor | None = None  # (N, 2, 3) affine matrices from output to input coordinates
    vflips: torch.Tensor | None = None  # (N,) bool: turn these images upside down
    turns: torch.Tensor | None = None  # (N,) quarter turns counter-clockwise, 0..3


@dataclass(frozen=True)
class Augment:
    """The `training.augment` settings."""

    hflip: bool = False
    crop: int = 0
    shift: float = 0.0
    zoom: float = 0.0
    rotation: float = 0.0
    shear: float = 0.0
    vflip: bool = False
    rot90: bool = False
    fill: str = "reflect"
    zoom_axes: str = "same"  # not filled into the cell when unset (so that cells without it keep their JSON)

    def __post_init__(self):
        if self.fill not in GRID_PADDING:
            raise ValueError(f"training.augment.fill: {self.fill!r} is not one of {sorted(GRID_PADDING)}")
        if self.zoom_axes not in ZOOM_AXES:
            raise ValueError(f"training.augment.zoom_axes: {self.zoom_axes!r} is not one of {list(ZOOM_AXES)}")

    @classmethod
    def from_config(cls, config: dict | None) -> "Augment":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config or {}) - known)
        if unknown:
            raise ValueError(f"training.augment: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**(config or {}))

    @property
    def active(self) -> bool:
        return self.hflip or self.vflip or self.rot90 or self.crop > 0 or self.affine

    @property
    def affine(self) -> bool:
        return self.shift > 0 or self.zoom > 0 or self.rotation > 0 or self.shear > 0

    def draw(self, n: int, generator: torch.Generator) -> Params:
        """The number of flips, crop offsets, affine matrices, vertical flips and turns for a batch of `n`
        (each drawn only when it is on, so a setting that is off leaves the other draws as they were)."""
        flips = int((torch.rand(n, generator=generator) < 0.5).sum()) if self.hflip else 0
        crop = torch.randint(0, 2 * self.crop + 1, (n, 2), generator=generator) if self.crop else None
        theta = self.draw_affine(n, generator) if self.affine else None
        vflips = torch.rand(n, generator=generator) < 0.5 if self.vflip else None
        turns = torch.randint(0, 4, (n,), generator=generator) if self.rot90 else None
        return Params(flips, crop, theta.float() if theta is not None else None, vflips, turns)

    def draw_affine(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Affine matrices (N, 2, 3), float64. Zoom `same` scales each image by one factor in [1 - zoom,
        1 + zoom]; `independent` draws as Keras's `zoom_range`: factors zx and zy, each uniform in
        [1 - zoom, 1 + zoom], and output pixel (x, y) comes from input (zx x, zy y), after the shear."""
        independent = self.zoom_axes == "independent"
        u = torch.rand(n, 5 if independent else 4, generator=generator, dtype=torch.float64) * 2 - 1  # in [-1, 1]
        angle = u[:, 0] * math.radians(self.rotation)
        scale = 1.0 if independent else 1 + u[:, 1] * self.zoom
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        shift = u[:, 2:4] * 2 * self.shift  # normalised coordinates span 2
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        if self.shear > 0:
            theta = sheared(theta, (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * self.shear)
        if independent:
            factors = 1 + torch.stack([u[:, 1], u[:, 4]], 1) * self.zoom  # (N, 2): zx, zy
            theta = torch.cat([theta[:, :, :2] * factors[:, None, :], theta[:, :, 2:]], 2)
        return theta

    def geometric(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Apply the vertical flips, turns, crop and affine parts of `params` to a float batch (N, C, H, W)."""
        if params.vflips is not None:
            x = torch.where(params.vflips.to(x.device)[:, None, None, None], x.flip(2), x)
        if params.turns is not None:
            x = quarter_turns(x, params.turns.to(x.device))
        if params.crop is not None:
            x = random_crop(x, params.crop.to(x.device), self.crop, self.fill)
        if params.theta is not None:
            grid = F.affine_grid(params.theta.to(x.device), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=GRID_PADDING[self.fill], align_corners=False)
        return x


def sheared(theta: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Affine matrices (N, 2, 3) composed with a shear by `degrees` (N,), as Keras shears."""
    angle = torch.deg2rad(degrees)
    shear = torch.zeros(len(degrees), 2, 2, dtype=theta.dtype)
    shear[:, 0, 0], shear[:, 0, 1], shear[:, 1, 1] = 1.0, -torch.sin(angle), torch.cos(angle)
    return torch.cat([theta[:, :, :2] @ shear, theta[:, :, 2:]], 2)


def quarter_turns(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Turn each square image of (N, C, H, W) by its number of quarter turns counter-clockwise."""
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"training.augment.rot90: needs square images, not {x.shape[2]}x{x.shape[3]}")
    out = x
    for k in (1, 2, 3):
        out = torch.where((turns == k)[:, None, None, None], x.rot90(k, dims=(2, 3)), out)
    return out


def _source_index(index: torch.Tensor, size: int, fill: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map positions outside 0..size-1 into the image by `fill`; also a mask of those inside."""
    inside = (index >= 0) & (index < size)
    if fill == "reflect":
        index = index.abs()
        index = torch.where(index >= size, 2 * (size - 1) - index, index)
    return index.clamp(0, size - 1), inside


def random_crop(x: torch.Tensor, offsets: torch.Tensor, padding: int, fill: str) -> torch.Tensor:
    """Crop each image of (N, C, H, W) from its padded version at (top, left) = `offsets`, in one gather."""
    n, _, h, w = x.shape
    if padding >= min(h, w):
        raise ValueError(f"training.augment.crop: padding {padding} must be smaller than the image size {h}x{w}")
    rows, row_in = _source_index(offsets[:, :1] - padding + torch.arange(h, device=x.device), h, fill)
    cols, col_in = _source_index(offsets[:, 1:] - padding + torch.arange(w, device=x.device), w, fill)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = x[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C): advanced indices come first
    if fill == "zeros":
        out = out * (row_in[:, :, None] & col_in[:, None, :])[..., None]
    return out.permute(0, 3, 1, 2)
