"""Telling image files from the rest, and decoding them to RGB arrays."""

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from .catalogue import Skipped

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def ignore_reason(name: str) -> str | None:
    """Why a listed file is not used as an image (hidden, not an image), or None."""
    path = PurePosixPath(name)
    if any(part.startswith(".") for part in path.parts):
        return "hidden file"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file ({path.suffix or 'no extension'})"
    return None


def to_rgb(img: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3): 16-bit values scaled to 8 bits, alpha composited on white.

    Mode "I" is taken to hold 16-bit values, as 16-bit PNGs open that way.
    """
    if img.mode in SIXTEEN_BIT_MODES:
        gray = np.clip(np.rint(np.asarray(img, dtype=np.float64) * (255 / 65535)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.has_transparency_data:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return np.array(img.convert("RGB"))


def decode(source, key: str):
    """Fully decode an image (path or binary file object) with EXIF orientation applied.

    Returns RGB uint8 (H, W, 3), or Skipped(key, reason) for a file that
    cannot be decoded: empty, truncated, not an image, or corrupt.
    """
    try:
        with Image.open(source) as img:
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
