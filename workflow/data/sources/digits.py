"""scikit-learn's bundled digits (8x8, values 0-16): offline, no split of its own."""

from pathlib import Path

import numpy as np

from workflow.data.download import size_and_digests

from .base import Source
from .catalogue import Catalogue
from .cifar import ArrayReader


def data_file() -> Path:
    """The file scikit-learn loads the digits from."""
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


class Digits(Source):
    """The digits: nothing to download or check; the plan records scikit-learn's data file."""

    DEFAULTS = {"split": {"train": 0.7, "val": 0.15, "test": 0.15}, "shards": 1}
    REFUSED = {"path": "digits comes bundled with scikit-learn"}

    def open_catalogue(self, raw_dir, spec: dict) -> Catalogue:
        """All 1,797 digits as RGB uint8 (values scaled by 255/16), labelled "0".."9"."""
        import sklearn.datasets

        digits = sklearn.datasets.load_digits()
        gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        return Catalogue(
            class_names=[str(i) for i in range(10)],
            labels=digits.target.astype(np.int64),
            splits=np.full(len(gray), ""),
            keys=[f"digits[{i}]" for i in range(len(gray))],
            reader=ArrayReader(np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))),
        )

    def source_records(self, spec: dict, raw_dir) -> list[dict]:
        """Size and digests of the file scikit-learn loads the digits from."""
        return [{"file": str(data_file()), **size_and_digests(data_file())}]


DIGITS = Digits()
