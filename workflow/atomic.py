"""Write files so that a killed job never leaves one that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from workflow.integrity import storage_error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only on success. An OSError about the
    temporary file (a full disk, a file-size limit) becomes a StorageError naming `path` and the cause."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if error.filename not in (None, str(tmp), tmp):
            raise  # about another file the block read or wrote
        raise storage_error(path, error) from error
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
