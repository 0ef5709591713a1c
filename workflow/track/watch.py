"""What a training job shows as it goes (`Watch`): its progress.json (state, stage, epoch, batch,
latest validation accuracy, speed; rewritten at most every few seconds while an epoch runs, read by
`python -m workflow status`), a tqdm bar per epoch when stderr is a terminal or else a line every
`tracking.progress_every` batches, and TensorBoard events and an MLflow run when `tracking` asks."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from tqdm import tqdm

from workflow.atomic import write_json
from workflow.core import paths
from workflow.sweep.status import planned_epochs
from workflow.track.attempts import read_progress
from workflow.track.mlruns import CellRun
from workflow.track.tensorboard import CellBoard

HEARTBEAT_S = 5.0  # progress.json is rewritten at most this often inside an epoch
PROGRESS_EVERY = 20  # batches between progress lines when stderr is not a terminal (tracking.progress_every)


class Watch:
    """One training job's progress file, progress lines or bar, and tracking."""

    def __init__(self, out_dir, cell, tracking: dict | None = None, log=print, until_epoch: int | None = None):
        tracking = tracking or {}
        self.out_dir, self.cell, self.log = Path(out_dir), cell, log
        self.every = tracking.get("progress_every", PROGRESS_EVERY)
        self.terminal = getattr(sys.stderr, "stream", sys.stderr)  # the real stderr under attempt_log's tee
        previous = read_progress(out_dir) or {}
        self.record = {"cell": cell.id, "state": "running", "attempt": previous.get("attempt", 0) + 1,
                       "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                       "planned_epochs": planned_epochs(cell, until_epoch), "epoch": 0, "batch": 0}
        self.trackers = ([CellBoard(paths.job_files(out_dir)["tensorboard"], cell, log)] if tracking.get("tensorboard")
                         else []) + ([CellRun(tracking, cell, out_dir, log)] if tracking.get("mlflow") else [])
        self.bar, self.written, self.mark, self.unwritten = None, 0.0, None, False

    def write(self, **changes) -> None:
        """Update progress.json (atomically: `status` never reads half a file); a failure to write
        it warns once and never fails the cell."""
        self.record.update(changes, updated=time.time())
        self.written = time.monotonic()
        try:
            write_json(paths.job_files(self.out_dir)["progress"], self.record)
        except OSError as error:
            if not self.unwritten:
                self.log(f"warning: cannot write {paths.PROGRESS_JSON} ({error}); `status` will not see this job")
            self.unwritten = True

    def start(self, job, state) -> None:
        """The job has set up and resumed (`state`): where the run stands."""
        stages = job.cell.training.stages
        stage_name = stages[state.stage_index]["name"] if state.stage_index < len(stages) else None
        self.batches = -(-len(job.train) // job.cell.batch_size)
        self.write(epoch=state.epoch, stage=stage_name, batches=self.batches, elapsed_s=state.elapsed_s,
                   since=time.time(), **self.latest(state))
        for tracker in self.trackers:
            tracker.start(state.epoch)

    @staticmethod
    def latest(state) -> dict:
        row = state.history[-1] if state.history else {}
        return {"val_accuracy": row.get("val_accuracy"), "images_per_s": row.get("images_per_s")}

    def batch(self, position, stage_name: str) -> None:
        """A training batch is done: the bar moves, a progress line every `every` batches."""
        if self.terminal.isatty():
            if self.bar is None:
                self.bar = tqdm(total=self.batches, initial=position.batches - 1, file=self.terminal,
                                desc=f"epoch {position.epoch} ({stage_name})", unit="batch")
            self.bar.update(1)
        elif position.batches % self.every == 0 or position.batches == self.batches:
            self.log(f"epoch {position.epoch} ({stage_name}): batch {position.batches}/{self.batches}, "
                     f"train loss {position.loss_sum.item() / max(position.seen, 1):.4f}{self.speed(position)}")
        if time.monotonic() - self.written >= HEARTBEAT_S:
            self.write(batch=position.batches, stage=stage_name)

    def speed(self, position) -> str:
        """', <n> img/s' since this job's first batch of the epoch ('' until there are two)."""
        now = time.monotonic()
        if self.mark is None or self.mark[0] != position.epoch:
            self.mark = (position.epoch, now, position.seen)
            return ""
        _, then, seen = self.mark
        return f", {(position.seen - seen) / (now - then):.0f} img/s" if now > then else ""

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch(self, state, stage_name: str) -> None:
        """An epoch is counted: its history row is the last of `state.history`."""
        self.close_bar()
        self.write(epoch=state.epoch, batch=0, stage=stage_name, elapsed_s=state.elapsed_s, since=time.time(),
                   **self.latest(state))
        for tracker in self.trackers:
            tracker.epoch(state.history[-1])

    def end(self, outcome: str, metrics: dict | None = None, **details) -> None:
        """The job ends: `outcome` done, stopped or failed, with what to say about it (`metrics`: the
        finished cell's)."""
        self.close_bar()
        self.write(state=outcome, **details)
        for tracker in self.trackers:
            tracker.close(metrics)
