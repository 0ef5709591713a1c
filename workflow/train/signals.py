"""Stop signals: a flag they set instead of ending the process, and the exception that ends training.

SIGTERM (time limit, preemption, scancel), SIGINT (Ctrl-C) and the warning
signals SIGURG and SIGUSR1 only set `StopFlag`; training checks it at batch boundaries, writes
last.pt and raises `Stopped`, and the command exits with EXIT_STOPPED so that
a retry resumes the run.
"""

from __future__ import annotations

import signal

# SIGTERM: the time limit or preemption; SIGURG: the warning rules/train.smk asks SLURM for (every
# other process of the job step ignores it); SIGUSR1: the usual warning signal elsewhere; SIGINT: Ctrl-C,
# which a terminal sends to Snakemake and its jobs alike (no KeyboardInterrupt, e.g. inside torch.save).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGURG, signal.SIGUSR1)
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, try again


class StopFlag:
    """Set by a stop signal; the training loop checks it at batch boundaries and epoch ends."""

    def __init__(self):
        self.signal: str | None = None  # the first stop signal's name

    def __call__(self, signum, frame=None) -> None:
        self.signal = self.signal or signal.Signals(signum).name

    def install(self, signals=STOP_SIGNALS) -> "StopFlag":
        """Make `signals` set this flag (main thread only), instead of their default action."""
        self.previous = {sig: signal.signal(sig, self) for sig in signals}
        return self

    def uninstall(self) -> None:
        """Give the signals back the handlers they had before `install`."""
        for sig, handler in getattr(self, "previous", {}).items():
            signal.signal(sig, handler)


class Stopped(Exception):
    """A stop signal ended training; last.pt holds where it stood (`position`: inside an epoch)."""

    def __init__(self, signal_name: str, epochs: int, position=None):
        self.signal, self.epochs, self.position = signal_name, epochs, position
        where = f"after epoch {epochs}" if position is None else \
            f"in epoch {position.epoch} after {position.batches} batches"
        super().__init__(f"stopped by {signal_name} {where}: last.pt holds the run; exiting with status "
                         f"{EXIT_STOPPED} so that a retry resumes it")
