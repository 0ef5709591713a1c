"""Give each local training job a GPU of its own.

A job claims the first free device by taking an exclusive ``flock`` on
``<lock dir>/gpu<N>.lock``; the kernel releases the lock when the process
ends, however it ends. The claimed device becomes the job's only visible one
(``CUDA_VISIBLE_DEVICES``). A device list already set by a scheduler (SLURM
sets ``CUDA_VISIBLE_DEVICES``) is respected as it is.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

LOCK_DIR_ENV = "TLSWEEP_LOCK_DIR"
GPU_LIST_ENV = "TLSWEEP_GPUS"  # comma-separated device indices; overrides detection (tests use it)

_held_locks: list = []  # open lock files, kept for the life of the process


def local_gpus() -> list[str]:
    """Indices of this machine's NVIDIA GPUs (from $TLSWEEP_GPUS, else nvidia-smi)."""
    listed = os.environ.get(GPU_LIST_ENV)
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                            capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


def lock_dir() -> Path:
    """Where the device locks live (shared by every job on this machine)."""
    default = Path(tempfile.gettempdir()) / f"tlsweep-gpu-locks-{os.getuid()}"
    path = Path(os.environ.get(LOCK_DIR_ENV, default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def try_lock(gpu: str):
    """An open, exclusively locked file for `gpu`, or None if another process holds it."""
    handle = open(lock_dir() / f"gpu{gpu}.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_gpu(wait_s: float = 3600.0, poll_s: float = 0.5, log=print) -> str | None:
    """Claim a free local GPU and make it the only visible one; returns its index.

    Returns None when a scheduler already chose the devices or there is no GPU
    (the job then runs on what it sees, or on the CPU).
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        log(f"using the devices set by the scheduler: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}")
        return None
    gpus = local_gpus()
    if not gpus:
        log("no GPU found: training on the CPU")
        return None
    deadline = time.monotonic() + wait_s
    while True:
        for gpu in gpus:
            handle = try_lock(gpu)
            if handle is not None:
                _held_locks.append(handle)
                os.environ["CUDA_VISIBLE_DEVICES"] = gpu
                log(f"claimed GPU {gpu} (lock {handle.name})")
                return gpu
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {gpus} after {wait_s:.0f} s (locks in {lock_dir()})")
        time.sleep(poll_s)
