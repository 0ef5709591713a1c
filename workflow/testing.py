"""Faults for tests to inject into a training job, asked for through environment variables:

- ``TLSWEEP_INJECT_OOM_AT_STEP=N``: the first forward pass of the job's N-th
  training step raises ``torch.OutOfMemoryError``;
- ``TLSWEEP_INJECT_OOM_ABOVE=N``: every training forward pass of more than N
  images raises it;
- ``TLSWEEP_SIGNAL_AT_STEP=N``: the process sends itself SIGTERM right after its
  N-th training step, so that it stops there (``python -m workflow train``
  handles the signal).

`python -m workflow train` installs them only when one of these is set, as
torch's global module and optimizer hooks: the training code knows nothing of them.
"""

from __future__ import annotations

import contextlib
import os
import signal

import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from workflow.train.models import Classifier

OOM_AT_STEP = "TLSWEEP_INJECT_OOM_AT_STEP"
OOM_ABOVE = "TLSWEEP_INJECT_OOM_ABOVE"
SIGNAL_AT_STEP = "TLSWEEP_SIGNAL_AT_STEP"
FAULT_VARIABLES = (OOM_AT_STEP, OOM_ABOVE, SIGNAL_AT_STEP)


class InjectedFaults:
    """The faults of the module docstring, counting the optimizer steps taken while installed."""

    def __init__(self, oom_at_step: int = 0, oom_above: int = 0, signal_at_step: int = 0):
        self.oom_at_step, self.oom_above, self.signal_at_step = oom_at_step, oom_above, signal_at_step
        self.steps = 0  # optimizer steps taken
        self.injected_at_step = False

    def before_forward(self, module, args) -> None:
        """A forward pre-hook for every module; acts on the training forward passes of a Classifier."""
        if not (isinstance(module, Classifier) and module.training):
            return
        images = len(args[0])
        if self.oom_at_step and self.steps + 1 == self.oom_at_step and not self.injected_at_step:
            self.injected_at_step = True
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {OOM_AT_STEP}={self.oom_at_step})")
        if self.oom_above and images > self.oom_above:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {OOM_ABOVE}={self.oom_above}: "
                                         f"{images} images)")

    def after_step(self, optimizer, args, kwargs) -> None:
        """An optimizer step post-hook for every optimizer."""
        self.steps += 1
        if self.steps == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def injected_faults(environ=None):
    """Inject the faults that `environ` (default: os.environ) asks for while the block runs; yields
    the InjectedFaults, or None (and installs nothing) when it asks for none."""
    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in FAULT_VARIABLES):
        yield None
        return
    faults = InjectedFaults(*(int(environ.get(name) or 0) for name in FAULT_VARIABLES))
    handles = [register_module_forward_pre_hook(faults.before_forward),
               register_optimizer_step_post_hook(faults.after_step)]
    try:
        yield faults
    finally:
        for handle in handles:
            handle.remove()
