"""scikit-learn's bundled digits (8x8, values 0-16): offline, no split of its own."""

from pathlib import Path

import numpy as np

from .catalog import Catalog, RemoteFile
from .cifar import ArrayReader


def data_file() -> Path:
    """The file scikit-learn loads the digits from."""
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


# Whether the plan reads source files from the raw folder (or the entry's local copy).
READS_RAW_FILES = False


def remote_files(spec: dict) -> list[RemoteFile]:
    return []


def open_catalog(raw_dir, spec: dict) -> Catalog:
    """All 1,797 digits as RGB uint8 (values scaled by 255/16), labelled "0".."9"."""
    import sklearn.datasets

    digits = sklearn.datasets.load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return Catalog(
        class_names=[str(i) for i in range(10)],
        labels=digits.target.astype(np.int64),
        splits=np.full(len(gray), ""),
        keys=[f"digits[{i}]" for i in range(len(gray))],
        reader=ArrayReader(np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))),
    )
