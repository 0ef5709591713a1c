"""An export folder's SHA256SUMS: the SHA-256 of its model files and preprocess.json, written last.

The file has `sha256sum`'s format (`<hex>  <name>` a line), so `sha256sum -c SHA256SUMS` in the
folder checks it too. `export_model` removes it before it writes anything and writes it, atomically,
only once every other file is written and checked: a folder without it is an export from before
checksums were recorded or one that was interrupted, and is refused like a changed file.
"""

from __future__ import annotations

import re
from pathlib import Path

from workflow.atomic import atomic_path
from workflow.core.paths import EXPORT_CHECKSUMS as CHECKSUMS
from workflow.export.checkpoint import CheckpointError
from workflow.integrity import sha256_of

LINE = re.compile(r"([0-9a-f]{64}) [ *]([^/\\]+)")


REEXPORT = ("re-export it (python -m workflow export --model <its cell's best.pt> --out <the folder>; a study's "
            "exports: snakemake --configfile <study> --forcerun export)")  # what to do about a refused export


def write_checksums(folder: str | Path, names: list[str]) -> None:
    """Write `folder`'s SHA256SUMS for its files `names`, atomically."""
    folder = Path(folder)
    with atomic_path(folder / CHECKSUMS) as tmp:
        tmp.write_text("".join(f"{sha256_of(folder / name)}  {name}\n" for name in names))


def verify_checksums(folder: str | Path, names: list[str]) -> None:
    """Check every file `folder`'s SHA256SUMS lists against its SHA-256; CheckpointError, one line naming
    the file, for a folder without SHA256SUMS, one that does not list each of `names`, and a file
    missing, changed or truncated since it was exported."""
    folder = Path(folder)
    listing = folder / CHECKSUMS
    if not listing.is_file():
        raise CheckpointError(f"{folder} has no {CHECKSUMS}: it was exported before exports recorded checksums, "
                              f"or its export was interrupted; {REEXPORT}")
    sums = {}
    for number, line in enumerate(listing.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        match = LINE.fullmatch(line)
        if match is None:
            raise CheckpointError(f"{listing}, line {number}: not '<SHA-256>  <file name>'; {REEXPORT}")
        sums[match.group(2)] = match.group(1)
    unlisted = [name for name in names if name not in sums]
    if unlisted:
        raise CheckpointError(f"{listing} lists no {', '.join(unlisted)}: the export is incomplete; {REEXPORT}")
    for name, digest in sums.items():
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name} is missing (it is listed in {listing}); {REEXPORT}")
        if sha256_of(folder / name) != digest:
            raise CheckpointError(f"{folder / name} does not match its SHA-256 in {listing}: it was changed or "
                                  f"truncated after it was exported; {REEXPORT}")
