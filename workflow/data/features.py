"""Cached backbone features, read back: what the `features` rule wrote (workflow.train.features) for a
dataset's splits at one resolution, from one backbone and starting weights.

The HDF5 file holds the groups `train`, `val` and `test`, each with `features` (float16, or float32 when the
features were computed in fp32: what the new head's first layer sees, N x D pooled features, or for a head of
layers that flattens or max-pools a feature map, the map the model hands on, N x C x H x W) and `labels`
(int64, N), in the order of the split's images in the manifest; its attributes say `model`, `resolution`,
`weights`, `pooling` (`paths.features_name`; absent from files written before it, which hold the pooled
features), `precision`, `shape` (per image) and `dim` (its size). The record beside it
(`paths.features_record`, JSON, written last) holds the file's SHA-256, the counts per split, the dim, and how
long the computation took: without it, the file is not complete. Torch-free (h5py and numpy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from workflow.core.paths import features_record
from workflow.data.shard_check import already_verified, identity, stamp_path
from workflow.atomic import write_json
from workflow.integrity import DamagedFileError, quarantine, sha256_of

SPLITS = ("train", "val", "test")


def read_record(path: str | os.PathLike) -> dict:
    """The record beside features file `path`; a missing or unreadable one is a DamagedFileError naming it."""
    record = Path(features_record(path))
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError) as error:
        raise DamagedFileError(f"{record} cannot be read ({type(error).__name__}: {error}); the features of "
                               f"{path} are not complete: run again to compute them") from None


def check_features(path: str | os.PathLike) -> dict:
    """Check features file `path` against the SHA-256 its record holds (once per machine while the file is
    unchanged, as shards are) and return the record. A damaged file is moved aside and its record removed,
    so that the next run computes both anew; the DamagedFileError says so."""
    path = Path(path)
    record = read_record(path)
    if not path.exists():
        raise DamagedFileError(f"{path} is missing though its record {features_record(path)} exists; delete "
                               f"the record and run again")
    if already_verified(path):
        return record
    if sha256_of(path) != record.get("sha256"):
        moved = quarantine(path)
        Path(features_record(path)).unlink(missing_ok=True)
        raise DamagedFileError(f"{path} is damaged: its SHA-256 differs from its record's; moved to {moved} and "
                               f"the record removed, so that the next run computes the features again")
    try:
        write_json(stamp_path(path), identity(path))
    except OSError:
        pass  # no cache to write to: checked again next time
    return record


def read_features(path: str | os.PathLike, splits=SPLITS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (features as float32, N x the shape of one image's, labels int64 N)} of a checked features file
    (`check_features`)."""
    check_features(path)
    out = {}
    with h5py.File(path, "r") as f:
        for split in splits:
            if split not in f:
                raise DamagedFileError(f"{path} has no split {split!r}; delete it and its record and run again")
            out[split] = (f[split]["features"][...].astype(np.float32), f[split]["labels"][...].astype(np.int64))
    return out

