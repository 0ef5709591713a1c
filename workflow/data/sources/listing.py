"""What a plan was made from, for sources read from the user's own files: every visible file under
a folder (or named by a CSV) with its size and modification time, and one digest of it all.

Torch-free and cheap (one stat per file): the Snakefile computes the digest when it parses, and a
digest that differs from the one the plan was made with re-plans the dataset.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def visible_files(root: Path) -> list[str]:
    """Every file under `root` whose path has no hidden part, as sorted paths relative to it."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        found += [(rel / name).as_posix() for name in files if not name.startswith(".")]
    return sorted(found)


def file_stats(root: Path, names: list[str]) -> list[list]:
    """[name, size, mtime in ns] of each file (size and mtime None for one that is missing)."""
    stats = []
    for name in names:
        try:
            stat = (root / name).stat()
            stats.append([name, stat.st_size, stat.st_mtime_ns])
        except OSError:
            stats.append([name, None, None])
    return stats


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listing_record(kind: str, where: str, stats: list[list], **extra) -> dict:
    """The plan's record of a listing: where, how many files, their stats and the digest of it all."""
    digest = hashlib.sha256(repr((kind, where, sorted(extra.items()), stats)).encode()).hexdigest()
    return {kind: where, **extra, "files": len(stats), "fingerprint": digest, "stats": stats}


def folder_record(root: str | os.PathLike) -> dict:
    """A folder's record: every visible file under it, with sizes and modification times."""
    return listing_record("folder", str(root), file_stats(Path(root), visible_files(Path(root))))
