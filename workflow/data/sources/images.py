"""Telling image files from the rest, and decoding them to RGB arrays."""

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .catalogue import Skipped
from .listing import special_kind

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
INTEGER_RANGES = (255, 65535, 2**31 - 1)  # what a 32-bit image (mode I) may hold: 8-bit, 16-bit or 32-bit values


def ignore_reason(name: str) -> str | None:
    """Why a listed file is not used as an image (hidden, not an image), or None."""
    path = PurePosixPath(name)
    if any(part.startswith(".") for part in path.parts):
        return "hidden file"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file ({path.suffix or 'no extension'})"
    return None


def integer_range(img: Image.Image) -> int:
    """The largest value a gray integer image's values are scaled from: 65535 for 16-bit modes; for 32-bit
    ones (mode I), the smallest of 255, 65535 and 2^31 - 1 that holds its largest value, so that a 32-bit
    TIFF of 8-bit values keeps them (one image's own range, never stretched to it)."""
    if img.mode in SIXTEEN_BIT_MODES:
        return 65535
    top = int(np.asarray(img).max(initial=0))
    return next((limit for limit in INTEGER_RANGES if top <= limit), INTEGER_RANGES[-1])


def to_rgb(img: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3): 16- and 32-bit gray values scaled to 8 bits (`integer_range`), alpha composited
    on white."""
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
        values = np.asarray(img, dtype=np.float64) * (255 / integer_range(img))
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.has_transparency_data:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return np.array(img.convert("RGB"))


def open_regular(path) -> BinaryIO:
    """`path` opened for reading without ever waiting (O_NONBLOCK: a FIFO does not wait for a writer);
    OSError for anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if reason := special_kind(os.fstat(fd).st_mode):
            raise OSError(f"{path}: {reason}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def decode(source, key: str):
    """Fully decode an image (path or binary file object) with EXIF orientation applied; a path is
    opened only if it is a regular file (`open_regular`).

    Returns RGB uint8 (H, W, 3), or Skipped(key, reason) for a file that
    cannot be decoded: empty, truncated, not an image, corrupt, or not a regular file.
    """
    try:
        if isinstance(source, (str, os.PathLike)):
            source = open_regular(source)
        with source, Image.open(source) as img:
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except Exception as exc:  # a corrupt file can fail in any decoder step
        return Skipped(key, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class PathReader:
    """Decodes the image files named by keys: paths relative to `root` (or absolute)."""

    root: Path

    def __call__(self, keys) -> list:
        return [decode(self.root / key, key) for key in keys]


@dataclass(frozen=True)
class FileReader:
    """Decodes the image files `keys[i]` (relative to `root`, or absolute) at the indices it is given."""

    root: Path
    keys: tuple[str, ...]

    def __call__(self, indices) -> list:
        return PathReader(self.root)([self.keys[i] for i in indices])
