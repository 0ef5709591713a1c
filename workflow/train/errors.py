"""Errors of a cell's own making: settings or inputs that this cell cannot train with.

`python -m workflow train` records a CellError as a `failed` cell (the job
succeeds and the sweep goes on); any other exception is a bug in tlsweep or a
problem of the machine and fails the job. Each is also a ValueError.
"""

from __future__ import annotations


class CellError(ValueError):
    """The cell cannot train as configured; its message says why."""


class TrainValueError(CellError):
    """The cell's `train` value names layers its model does not have."""


class HeadError(CellError):
    """The cell's head of layers cannot be built on its model or for its classes."""


class StartingWeightsError(CellError):
    """The checkpoint given as starting weights holds none, or none that fit the model."""


class ResolutionError(CellError):
    """The model cannot take the cell's resolution."""


class SplitTooSmallError(CellError):
    """The training split has too few images to train on."""
