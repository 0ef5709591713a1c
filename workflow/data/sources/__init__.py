"""Dataset sources by name: each lists its remote files and opens a Catalog."""

from . import cats_vs_dogs, digits, imagefolder, pcam
from .catalog import Catalog, RemoteFile, Skipped
from .cifar import CIFAR10, CIFAR100

SOURCES = {
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "cats_vs_dogs": cats_vs_dogs,
    "pcam": pcam,
    "imagefolder": imagefolder,
    "digits": digits,
}

__all__ = ["SOURCES", "Catalog", "RemoteFile", "Skipped", "get_source"]


def get_source(name: str):
    """The source called `name`, with `remote_files(spec)` and `open_catalog(raw_dir, spec)`."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)}")
    return SOURCES[name]
