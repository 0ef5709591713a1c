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
    links to them), `folders` (visible folders, links to them included), `others` ({"file", "reason"} for
    hidden entries, special files, links to nothing, folders met twice through links and folders that
    cannot be read; `unreadable` names the last, with why) and `stats` ([path, size, mtime in ns] of each
    visible entry but a folder: what its fingerprint digests)."""

    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    others: list[dict] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    stats: list[list] = field(default_factory=list)


def special_kind(mode: int) -> str | None:
    """None for a regular file's `st_mode`, else why it is not read: a FIFO, a socket or a device is never
    opened as an image (opening a FIFO waits for a writer)."""
    if stat.S_ISREG(mode):
        return None
    kind = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
            stat.S_IFBLK: "block device", stat.S_IFDIR: "folder"}.get(stat.S_IFMT(mode), "special file")
    return f"not a regular file ({kind})"


def list_folder(root: Path) -> Listing:
    """Every entry under `root`, one stat each, links followed (each folder once, so that a link to an
    ancestor ends there); hidden entries are not looked into."""
    found, seen, pending = Listing(), {os.path.realpath(root)}, [""]
    while pending:
        rel = pending.pop()
        try:
            with os.scandir(Path(root) / rel) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            found.unreadable[rel] = error.strerror or type(error).__name__
            found.others.append({"file": rel, "reason": f"cannot be read ({found.unreadable[rel]})"})
            found.stats.append([rel, None, None])
            continue
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith("."):
                found.others.append({"file": key, "reason": HIDDEN})
                continue
            try:
                info = entry.stat()  # through links
            except OSError as error:
                found.others.append({"file": key, "reason": "a link to nothing" if entry.is_symlink()
                                     else f"cannot be read ({error.strerror})"})
                found.stats.append([key, None, None])
                continue
            real = os.path.realpath(entry.path) if stat.S_ISDIR(info.st_mode) else None
            if real and real not in seen:
                seen.add(real)
                found.folders.append(key)
                pending.append(key)
                continue
            reason = f"a link to a folder listed already ({real})" if real else special_kind(info.st_mode)
            if reason:
                found.others.append({"file": key, "reason": reason})
            else:
                found.files.append(key)
            found.stats.append([key, info.st_size, info.st_mtime_ns])
    for names in (found.files, found.folders, found.stats):
        names.sort()
    found.others.sort(key=lambda entry: entry["file"])
    return found


def file_stats(root: Path, names: list[str]) -> list[list]:
    """[name, size, mtime in ns] of each file (size and mtime None for one that is missing)."""
    stats = []
    for name in names:
        try:
            info = (root / name).stat()
            stats.append([name, info.st_size, info.st_mtime_ns])
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
    return listing_record("folder", str(root), (listing or list_folder(Path(root))).stats)
