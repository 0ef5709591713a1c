"""Tracking never fails a cell: a tracker's methods run `guarded`."""

from __future__ import annotations

import functools

from workflow.integrity import to_console

CONSOLE_CHARACTERS = 300  # a warning's line on the console is cut to this length (the log has it whole)


def guarded(method):
    """Run a tracker's method only while the tracker is on (`start` turns it on); on any error, log
    one warning naming the tracker (`name`), say it on the console too (a training job's cell named)
    and turn the tracker off."""
    @functools.wraps(method)
    def run(self, *args):
        starting = method.__name__ == "start"
        if not (self.on or starting):
            return
        try:
            self.on = self.on or starting
            method(self, *args)
        except Exception as error:  # tracking never fails a cell: the tables are the source of truth
            message = f"{self.name} are off for this job: {type(error).__name__}: {error}"
            self.log(f"warning: {message}")
            cell = getattr(self, "cell", None)
            line = f"warning: {cell.id}: {message}" if cell is not None else f"warning: {message}"
            to_console(line.splitlines()[0][:CONSOLE_CHARACTERS])
            self.on = False
    return run
