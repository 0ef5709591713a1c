"""Dataset sources by name, each a `Source` (see base.py): its defaults, checks, files and Catalogue."""

from .base import Source
from .catalogue import Catalogue, RemoteFile, Skipped
from .cats_vs_dogs import CATS_VS_DOGS
from .cifar import CIFAR10, CIFAR100
from .digits import DIGITS
from .hf import HUGGING_FACE
from .imagefolder import IMAGEFOLDER
from .pcam import PCAM
from .table import TABLE

SOURCES: dict[str, Source] = {
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "cats_vs_dogs": CATS_VS_DOGS,
    "pcam": PCAM,
    "imagefolder": IMAGEFOLDER,
    "csv": TABLE,
    "hf": HUGGING_FACE,
    "digits": DIGITS,
}

__all__ = ["SOURCES", "Catalogue", "RemoteFile", "Skipped", "Source", "get_source"]


def get_source(name: str) -> Source:
    """The source called `name`."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)}")
    return SOURCES[name]
