"""A training job's own log, appended by every attempt and headed by when and why the attempt
started (Snakemake's log of a job holds only its latest attempt). Imports no torch."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path

from workflow.core import paths


class Tee(io.TextIOBase):
    """A text stream that writes to `stream` and to an open file."""

    def __init__(self, stream, file):
        super().__init__()
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.file.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def read_progress(out_dir) -> dict | None:
    """A job folder's progress.json, or None when there is none (or it cannot be read)."""
    try:
        return json.loads(Path(paths.job_files(out_dir)["progress"]).read_text())
    except (OSError, ValueError):
        return None


def attempt_reason(out_dir) -> str:
    """Why a training job starts in `out_dir`: fresh, or resuming last.pt after the previous attempt
    was stopped by a signal or killed (what its progress.json says)."""
    previous = read_progress(out_dir)
    if not (Path(out_dir) / paths.LAST_PT).exists():
        return "fresh" if previous is None else f"fresh (the last attempt left no {paths.LAST_PT})"
    if previous is None:
        return f"resumes from {paths.LAST_PT}"
    where = f"after epoch {previous.get('epoch')}"
    if previous.get("batch"):
        where += f" and {previous['batch']} batches of epoch {previous['epoch'] + 1}"
    if previous.get("state") == "stopped":
        return f"resumes {where}: the last attempt was stopped by {previous.get('signal')}"
    if previous.get("state") == "running":
        return f"resumes from {paths.LAST_PT}: the last attempt was killed {where}"
    return f"resumes from {paths.LAST_PT}: the last attempt ended as {previous.get('state')}"


def attempt_header(out_dir) -> str:
    """The line that starts an attempt in the log: its number, start time and why it started."""
    previous = read_progress(out_dir) or {}
    number = previous.get("attempt", 0) + 1
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"===== attempt {number}, started {started}: {attempt_reason(out_dir)} ====="


@contextlib.contextmanager
def attempt_log(out_dir):
    """Append what the block prints (stdout and stderr) to the job folder's train.log, after the
    attempt's header; an exception's traceback goes there too."""
    path = Path(paths.job_files(out_dir)["log"])
    path.parent.mkdir(parents=True, exist_ok=True)
    header = attempt_header(out_dir)
    with open(path, "a", buffering=1) as file:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(stdout, file), Tee(stderr, file)
        try:
            print(header, flush=True)
            yield path
        except Exception:
            file.write(traceback.format_exc())
            raise
        finally:
            sys.stdout, sys.stderr = stdout, stderr
