"""Microsoft's Kaggle Cats and Dogs, read straight from the zip (no source split)."""

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DownloadedSource
from .catalogue import Catalogue, RemoteFile
from .images import decode, ignore_reason

REMOTE = RemoteFile(
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip",
    "kagglecatsanddogs_5340.zip",
    None,  # no published md5: the manifest records the sha256 found
)
CLASS_NAMES = ["Cat", "Dog"]


@dataclass(frozen=True)
class ZipReader:
    """Decodes members of a zip archive; undecodable ones come back as Skipped."""

    path: Path
    members: tuple[str, ...]

    def __call__(self, indices):
        with zipfile.ZipFile(self.path) as zf:
            return [decode(io.BytesIO(zf.read(self.members[i])), self.members[i]) for i in indices]


class CatsVsDogs(DownloadedSource):
    """The zip, downloaded or in a local copy; no split of its own."""

    DEFAULTS = {"path": None, "mirror": None, "checksums": {}, "split": {"train": 0.8, "val": 0.1, "test": 0.1},
                "shards": 4}
    FILES = (REMOTE,)
    DECODES = True

    def open_catalogue(self, raw_dir: Path, spec: dict) -> Catalogue:
        """List PetImages/Cat and PetImages/Dog; everything else goes to `ignored`."""
        path = Path(raw_dir) / REMOTE.filename
        folders = {f"PetImages/{name}/": label for label, name in enumerate(CLASS_NAMES)}
        keys, labels, ignored = [], [], []
        with zipfile.ZipFile(path) as zf:
            names = sorted(info.filename for info in zf.infolist() if not info.is_dir())
        for name in names:
            folder = name[: name.rfind("/") + 1]
            if folder not in folders:
                ignored.append({"file": name, "reason": "outside PetImages/Cat and PetImages/Dog"})
            elif reason := ignore_reason(name):
                ignored.append({"file": name, "reason": reason})
            else:
                keys.append(name)
                labels.append(folders[folder])
        return Catalogue(
            class_names=list(CLASS_NAMES),
            labels=np.asarray(labels, dtype=np.int64),
            splits=np.full(len(keys), ""),
            keys=keys,
            reader=ZipReader(path, tuple(keys)),
            ignored=ignored,
        )


CATS_VS_DOGS = CatsVsDogs()
