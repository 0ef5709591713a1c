"""Tracking never fails a cell: a tracker's methods run `guarded`."""

from __future__ import annotations

import functools


def guarded(method):
    """Run a tracker's method only while the tracker is on (`start` turns it on); on any error, log
    one warning naming the tracker (`name`) and turn it off."""
    @functools.wraps(method)
    def run(self, *args):
        starting = method.__name__ == "start"
        if not (self.on or starting):
            return
        try:
            self.on = self.on or starting
            method(self, *args)
        except Exception as error:  # tracking never fails a cell: the tables are the source of truth
            self.log(f"warning: {self.name} are off for this job: {type(error).__name__}: {error}")
            self.on = False
    return run
