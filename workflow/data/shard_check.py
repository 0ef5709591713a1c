"""Shards checked against their recorded SHA-256s before training reads them: once per shard per
machine, with a stamp in the user's cache ($XDG_CACHE_HOME/tlsweep/verified-shards) that remembers the
file's identity (device, inode, size, mtime and ctime: a rewrite that keeps the mtime still changes the
ctime). A damaged shard is moved aside and its manifest removed, so that the next run writes both anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from workflow.atomic import write_json
from workflow.data.shards import shard_files, verify_shard
from workflow.integrity import DamagedFileError, quarantine


def stamp_folder() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tlsweep" / "verified-shards"


def identity(path: Path) -> dict:
    stat = os.stat(path)
    return {"path": str(path.resolve()), "dev": stat.st_dev, "ino": stat.st_ino, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def stamp_path(path: Path) -> Path:
    return stamp_folder() / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]}.json"


def already_verified(path: Path) -> bool:
    try:
        return json.loads(stamp_path(path).read_text()) == identity(path)
    except (OSError, ValueError):
        return False


def check_shards(dataset: str | os.PathLike) -> None:
    """Verify every shard of a prepared dataset (its manifest or a shard file) not verified on this
    machine since it last changed; a damaged one raises DamagedFileError naming it."""
    dataset = Path(dataset)
    for shard in shard_files(dataset):
        if already_verified(shard):
            continue
        try:
            verify_shard(shard)
        except (OSError, ValueError, KeyError) as error:
            raise damaged(shard, dataset, error) from None
        try:
            write_json(stamp_path(shard), identity(shard))
        except OSError:
            pass  # no cache to write to: verified again next time


def damaged(shard: Path, dataset: Path, error: BaseException) -> DamagedFileError:
    """Move a damaged shard aside and remove its manifest (both are made again); the error says so."""
    moved = quarantine(shard)
    redo = f"moved to {moved}"
    if dataset.suffix == ".json" and dataset.exists():
        dataset.unlink()
        redo += f" and {dataset} removed, so that the next run writes both anew"
    return DamagedFileError(f"shard {shard} is damaged ({type(error).__name__}: {error}); {redo}")
