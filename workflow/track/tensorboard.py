"""A cell's TensorBoard event files (`tracking.tensorboard`): one scalar per history column and
epoch, and the cell's axes and training settings as hyperparameters with its test and best
validation accuracy (TensorBoard's HParams tab, across the cells of `tensorboard --logdir
results/<study>`). A resumed job drops the events after the epoch it resumes from (`purge_step`),
so the events equal history.csv. A failure warns once and turns the events off; it never fails a cell."""

from __future__ import annotations

import functools

from workflow.study.grid import AXES
from workflow.track.guard import guarded

SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s")  # history columns
METRICS = ("test_accuracy", "best_val_accuracy")  # the hyperparameters' metrics, at the cell's end
TRAINING_KEYS = ("momentum", "weight_decay", "schedule", "mixup", "label_smoothing", "dropout", "head")


def hyperparameters(cell) -> dict:
    """The cell's axes, swept training keys and main training settings, as TensorBoard takes them."""
    values = {axis: getattr(cell, axis) for axis in AXES}
    values.update({f"training.{key}": getattr(cell.training, key) for key in TRAINING_KEYS})
    values.update({f"training.{key}": value for key, value in cell.params.items()})
    values["epochs"] = cell.training.epochs
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in values.items()}


class CellBoard:
    """A cell's SummaryWriter, written from the training job (`workflow.track.watch.Watch`)."""

    name = "TensorBoard events"

    def __init__(self, folder: str, cell: dict, log=print):
        self.folder, self.cell, self.log, self.writer, self.on = folder, cell, log, None, False

    @guarded
    def start(self, epochs_done: int) -> None:
        """Open the events (dropping any after `epochs_done`) and write the hyperparameters."""
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(self.folder, purge_step=epochs_done + 1 if epochs_done else None)
        experiment, start, _ = hparams(hyperparameters(self.cell), {f"hparams/{name}": None for name in METRICS})
        for summary in (experiment, start):
            self.writer.file_writer.add_summary(summary)

    @guarded
    def epoch(self, row: dict) -> None:
        """One history row's scalars at step = its epoch."""
        for name in SCALARS:
            if row.get(name) is not None:
                self.writer.add_scalar(name, row[name], row["epoch"])
        self.writer.flush()

    @guarded
    def close(self, metrics: dict | None) -> None:
        """The finished cell's metrics (None: it did not finish), then close the events."""
        from torch.utils.tensorboard.summary import hparams

        if metrics is not None:
            for name in METRICS:
                if metrics.get(name) is not None:
                    self.writer.add_scalar(f"hparams/{name}", metrics[name], metrics.get("epochs_run") or 0)
            _, _, end = hparams(hyperparameters(self.cell), {f"hparams/{name}": None for name in METRICS})
            self.writer.file_writer.add_summary(end)
        self.writer.close()
        self.on = False
