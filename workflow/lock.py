"""A lock on a study's results folder, so that two runs from different working folders (Snakemake's own
lock is per working folder) never train, clean up or overwrite each other's cells.

The lock is an flock on <study folder>/.tlsweep.lock, held by the Snakemake process for its life (no job
inherits it): a killed run leaves no stale lock, so there is nothing to unlock. The file says who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".tlsweep.lock"
_held: dict[str, int] = {}  # lock file -> its descriptor, open while this process runs


class ResultsLockedError(RuntimeError):
    """Another live run holds the results folder."""


def holder_text(fd: int) -> str:
    """Who holds a lock, from what its file says."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "a run that has not said who it is yet"
    return (f"Snakemake process {holder.get('pid')} on {holder.get('host')}, working folder "
            f"{holder.get('workdir')}, since {holder.get('since')}")


def lock_results(folder: str | os.PathLike) -> Path:
    """Take the lock of the results `folder` for this process's life, or raise ResultsLockedError
    naming the run that holds it. Taking it again in the same process is a no-op."""
    path = Path(folder).resolve() / LOCK_FILE
    if str(path) in _held:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = holder_text(fd)
        os.close(fd)
        raise ResultsLockedError(
            f"{path.parent} is in use by another run: {holder}. Wait until it ends (its lock goes with its "
            f"process, so there is nothing to unlock), or give this run another results_dir") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "workdir": os.getcwd(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    _held[str(path)] = fd
    return path
