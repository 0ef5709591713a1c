"""What a plan was made from, for sources read from the user's own files: every visible file under
a folder (or named by a CSV) with its size and modification time, and one digest of it all. A folder
is listed once, by `list_folder`, for its fingerprint and for its images alike.

Torch-free and cheap (one stat per file): the Snakefile computes the digest when it parses, and a
digest that differs from the one the plan was made with re-plans the dataset.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


HIDDEN = "hidden file"  # the reason a listing gives for an entry whose name starts with "."


@dataclass
class Listing:
    """What `list_folder` found under a folder, as sorted paths relative to it: `files` (regular files, or
    links to them), `folders` (visible folders, links to them included) and `others` ({"file", "reason"}
    for hidden entries, special files, links to nothing, folders met twice through links and folders that
    cannot be read). `unreadable` names the last (path: reason)."""

    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    others: list[dict] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)

    def visible(self) -> list[str]:
        """The files and the visible entries it did not read: what a fingerprint stats."""
        return sorted(self.files + [entry["file"] for entry in self.others if entry["reason"] != HIDDEN])


def special_kind(mode: int) -> str | None:
    """None for a regular file's `st_mode`, else why it is not read: a FIFO, a socket or a device is never
    opened as an image (opening a FIFO waits for a writer)."""
    if stat.S_ISREG(mode):
        return None
    kind = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
            stat.S_IFBLK: "block device", stat.S_IFDIR: "folder"}.get(stat.S_IFMT(mode), "special file")
    return f"not a regular file ({kind})"


def entry_kind(path: str) -> str | None:
    """None for a regular file (or a link to one), else why it is not read (`special_kind`, a link to
    nothing)."""
    try:
        return special_kind(os.stat(path).st_mode)
    except OSError as error:
        return "a link to nothing" if os.path.islink(path) else f"cannot be read ({error.strerror})"


def list_folder(root: Path) -> Listing:
    """Every entry under `root`, links followed (each folder once, so that a link to an ancestor ends),
    hidden ones not descended into."""
    found, seen = Listing(), set()

    def unreadable(error: OSError) -> None:
        rel = Path(error.filename).relative_to(root).as_posix()
        found.unreadable[rel] = error.strerror or type(error).__name__
        found.others.append({"file": rel, "reason": f"cannot be read ({found.unreadable[rel]})"})

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=True):
        rel = Path(folder).relative_to(root)
        seen.add(os.path.realpath(folder))
        kept = []
        for name in sorted(dirs):
            path, key = os.path.join(folder, name), (rel / name).as_posix()
            if name.startswith("."):
                found.others.append({"file": key, "reason": HIDDEN})
            elif os.path.realpath(path) in seen:
                found.others.append({"file": key, "reason": f"a link to a folder listed already "
                                                            f"({os.path.realpath(path)})"})
            else:
                seen.add(os.path.realpath(path))
                kept.append(name)
                found.folders.append(key)
        dirs[:] = kept
        for name in files:
            key = (rel / name).as_posix()
            reason = HIDDEN if name.startswith(".") else entry_kind(os.path.join(folder, name))
            if reason:
                found.others.append({"file": key, "reason": reason})
            else:
                found.files.append(key)
    found.files.sort()
    found.folders.sort()
    found.others.sort(key=lambda entry: entry["file"])
    return found


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


def folder_record(root: str | os.PathLike, listing: Listing | None = None) -> dict:
    """A folder's record: every visible file under it (`list_folder`, or its `listing` made already), with
    sizes and modification times."""
    listing = listing or list_folder(Path(root))
    return listing_record("folder", str(root), file_stats(Path(root), listing.visible()))
