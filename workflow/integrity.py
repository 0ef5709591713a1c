"""Damaged and unwritable files: errors that name the file and its cause, SHA-256 stamps of a cell's
outputs, and moving a damaged output aside so that the rule that makes it runs again. Torch-free
(the Snakefile uses it); `load_torch` imports torch only when it is called.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import sys
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path

DAMAGED_SUFFIX = ".damaged"
_CHECKED: set[tuple] = set()  # (path, size, mtime, ctime) of the cell files check_cell_file passed


class StorageError(OSError):
    """A file could not be written (a full disk, a file-size limit, ...): the job fails and is retried."""


class DamagedFileError(OSError):
    """A file that a job reads is corrupt or truncated; the message names it and what becomes of it."""


def storage_error(path, error: OSError) -> StorageError:
    """`error` while writing `path`, as a StorageError naming both (e.g. 'No space left on device')."""
    cause = error.strerror or str(error)
    failure = StorageError(error.errno, f"cannot write {path}: {cause}")
    failure.path = str(path)  # not its filename, which OSError's text would repeat
    return failure


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path) -> dict:
    """What metrics.json records of an output file, to recognise it later: its size and SHA-256."""
    return {"size": os.path.getsize(path), "sha256": sha256_of(path)}


def read_metrics(folder) -> tuple[dict | None, str | None]:
    """A cell's metrics.json and, when it cannot be read, what is wrong and what to do, naming the file
    (the verdict `damaged` of the summary and of `status`); (None, None) when there is none."""
    path = Path(folder) / "metrics.json"
    if not path.exists():
        return None, None
    try:
        metrics = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        return None, f"{path} is damaged ({type(error).__name__}: {error}); delete it and run again to redo the cell"
    if not isinstance(metrics, dict) or "status" not in metrics:
        return None, f"{path} is damaged (no `status`); delete it and run again to redo the cell"
    return metrics, None


def quarantine(path) -> Path:
    """Move a damaged file aside (<name>.damaged, kept for a look) and return where it went."""
    path = Path(path)
    dest = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, dest)
    return dest


def load_torch(path, **kwargs):
    """torch.load, with a DamagedFileError naming `path` when the file is truncated or not a checkpoint."""
    import torch

    try:
        return torch.load(path, **kwargs)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise DamagedFileError(f"{path} is damaged: it cannot be read as a checkpoint "
                               f"({type(error).__name__}: {error})") from None


def check_cell_file(path, always: bool = False, move_aside: bool = True) -> None:
    """Check a finished cell's output `path` (its best.pt, which other cells start from) against the stamp
    its metrics.json recorded: on a mismatch move it aside (unless not `move_aside`: a dry run writes
    nothing; the output missing, Snakemake trains the cell again when a job needs it) and raise
    DamagedFileError. Without `always`, the SHA-256 is computed only when the file changed after
    metrics.json (the size always counts). A cell not finished, or that recorded no stamp, passes."""
    path = Path(path)
    metrics_file = path.parent / "metrics.json"
    if not path.exists() or not metrics_file.exists():
        return
    try:
        metrics = json.loads(metrics_file.read_text())
    except ValueError:
        return  # the summary lists such a cell (workflow.results.aggregate)
    stamp = (metrics.get("files") or {}).get(path.name)
    if not stamp:
        return
    stat = path.stat()
    seen = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if seen in _CHECKED:
        return
    changed = always or stat.st_mtime_ns > metrics_file.stat().st_mtime_ns
    if stat.st_size == stamp["size"] and not (changed and sha256_of(path) != stamp["sha256"]):
        _CHECKED.add(seen)  # the Snakefile asks once per cell that starts from it
        return
    damaged = f"{path} is damaged: it is not the file cell {metrics.get('cell')} wrote (size or SHA-256 differ from its metrics.json)"
    if not move_aside:
        raise DamagedFileError(f"{damaged}; a run moves it aside and trains that cell again")
    dest = quarantine(path)
    raise DamagedFileError(f"{damaged}; moved to {dest}: that cell trains again once a job needs it, and the "
                           f"finished cells it started train again only if it comes back with other bytes "
                           f"(docs/training.md, damaged files)")


ERROR_FD = "TLSWEEP_ERROR_FD"  # where else a job's fatal error is written (report_fatal)
# torch.save's own errors when the stream it writes fails (a write that hit a full disk or a size limit)
TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "inline_container.cc", "file write failed")
FULL = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space or raise your quota",
        errno.EFBIG: "raise the file-size limit (ulimit -f)"}  # what to do about each
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
FOLDER_KEYS = "results_dir, data_dir or raw_dir in the study file"
ERRNO_TEXT = re.compile(r"\berrno = (\d+)")  # HDF5's errors say `errno = 28` and the file's name
FILE_TEXT = re.compile(r"\b(?:file)?name = '([^']+)'")
TEMPORARY = re.compile(r"/\.([^/]+)\.tmp-\d+$")  # workflow.atomic's temporary name of a file being written


def storage_message(error: BaseException, where: str | None = None) -> str | None:
    """One line for a write the storage refused (a full disk, a quota, a read-only or unwritable folder):
    the cause, the file or folder and what to do; None for another error. `where`: the file or folder
    the job writes, named when the error names none."""
    code = error.errno if isinstance(error, OSError) else None
    found = ERRNO_TEXT.search(str(error))
    code = code or (int(found[1]) if found else None)
    path = getattr(error, "path", None) or getattr(error, "filename", None)
    if not path:
        named = FILE_TEXT.search(str(error))
        path = named[1] if named else where
    path = TEMPORARY.sub(r"/\1", str(path)) if path else None
    if code in FULL:
        return (f"{os.strerror(code)}{f' writing {path}' if path else ''}: {FULL[code]}, or set {FOLDER_KEYS} "
                f"to a folder on another disk, and run again")
    if code in NOT_WRITABLE:
        folder = path if not path or os.path.isdir(path) else os.path.dirname(path)
        return (f"{os.strerror(code)}: {folder or 'a folder of this job'} is not writable; make it writable, or "
                f"set {FOLDER_KEYS} to a writable folder")
    return None


def fatal_message(error: BaseException, where: str | None = None, expected: tuple = ()) -> tuple[str, bool]:
    """The one line that says what ended a job, and whether the line says it all (storage errors, damaged
    files and the `expected` kinds, whose text is the line): only for other errors (a missing file, a bug)
    is a traceback worth its lines."""
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    message = storage_message(error, where) or (isinstance(cause, OSError) and storage_message(cause, where))
    if message:
        return message, True
    if isinstance(error, expected):  # their text is written for the user
        return str(error), True
    if isinstance(error, RuntimeError) and (isinstance(cause, OSError) or any(
            text in str(error) for text in TORCH_WRITE_FAILURES)):
        return f"a write failed ({error}{f'; {cause}' if cause else ''}); is the disk full?", True
    return f"{type(error).__name__}: {error}", isinstance(error, (StorageError, DamagedFileError))


def report_fatal(message: str) -> None:
    """Print the error that ends a job, as one line, where `console_note` prints, and never cut: what it
    names (the file, the URL, the ways out) is what the user acts on."""
    console_note(f"error: {' '.join(message.split())}", cut=False)


def console_note(line: str, cut: bool = True) -> None:
    """Print a line for the person running Snakemake: on stderr (the job's log) and on the file descriptor
    that $TLSWEEP_ERROR_FD names: every rule points it at Snakemake's own stderr, which stays readable when
    the log's disk is full."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass  # the log's disk is full
    to_console(line, cut)


CONSOLE_LINE = 300  # characters at most in a line on the run's console


def to_console(line: str, cut: bool = True) -> None:
    """Write one line (cut to CONSOLE_LINE characters unless `cut` is false) on the file descriptor that
    $TLSWEEP_ERROR_FD names (Snakemake's own stderr: the console); nothing where it names none."""
    fd = os.environ.get(ERROR_FD)
    if fd and fd.isdigit():
        line = line if len(line) <= CONSOLE_LINE or not cut else line[:CONSOLE_LINE - 3] + "..."
        try:
            os.write(int(fd), f"{line}\n".encode())
        except OSError:
            pass  # not open


def exit_status(job: Callable[[], object], where: str | None = None, expected: tuple = ()) -> int:
    """Run `job` (a command) and return its exit status: the error that ends it is reported by report_fatal
    as one line (`fatal_message`; a bug's traceback before it, in the log only), as is a `sys.exit("...")`
    message. Only a CellError is a cell's result (recorded as `failed`); the rest fail the job, so that
    Snakemake retries it and the retry resumes."""
    try:
        job()
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        report_fatal(stop.code.removeprefix("error: "))
        return 1
    except Exception as error:
        message, said = fatal_message(error, where, expected)
        if not said:
            try:
                traceback.print_exc()
            except OSError:
                pass  # the log's disk is full
        report_fatal(message)
        return 1
    return 0
