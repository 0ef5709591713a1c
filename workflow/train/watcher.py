"""What training tells whoever watches it. A training run is handed a `Watcher` and calls it as it
goes; it never imports the code that watches (`python -m workflow train` hands it
`workflow.track.watch.Watch`: progress.json, progress lines or a bar, TensorBoard, MLflow). Handed
none, it trains unwatched (`Unwatched`): only its results are written."""

from __future__ import annotations

from typing import Protocol


class Watcher(Protocol):
    """The calls a training run makes, in order: `start` once set up and resumed, `batch` after
    every training batch, `epoch` after every counted epoch, `end` when the job ends."""

    def start(self, job, state) -> None:
        """The job (`workflow.train.job.Job`) has set up and resumed: `state` is where the run stands."""

    def batch(self, position, stage_name: str) -> None:
        """A training batch is done (`position`: the epoch's `EpochPosition`)."""

    def epoch(self, state, stage_name: str) -> None:
        """An epoch is counted: its history row is the last of `state.history`."""

    def end(self, outcome: str, metrics: dict | None = None, **details) -> None:
        """The job ends: `outcome` done, stopped or failed, with the finished cell's `metrics`."""


class Unwatched:
    """The `Watcher` of a run that nobody watches: every call does nothing."""

    def start(self, job, state) -> None:
        pass

    def batch(self, position, stage_name: str) -> None:
        pass

    def epoch(self, state, stage_name: str) -> None:
        pass

    def end(self, outcome: str, metrics: dict | None = None, **details) -> None:
        pass
