"""Give each local training job a GPU of its own, or a share of one (slots).

A job claims a device by taking ``flock`` locks in the lock directory; the
kernel releases them when the process ends, however it ends. The claimed
device becomes the job's only visible one (``CUDA_VISIBLE_DEVICES``). A
device list already set by a scheduler (SLURM sets ``CUDA_VISIBLE_DEVICES``)
is respected as it is.

With ``slots_per_gpu`` K > 1 (``resources.slots_per_gpu``) a device holds up to K
jobs. Per device there are:

- ``gpu<N>.lock``: taken exclusively by a job that needs the whole device
  (all K slots; with K = 1 that is every job), and shared by every job that
  needs only part of it;
- ``gpu<N>.slot<j>.lock`` (j < K): one exclusive lock per slot a partial job holds.

A job takes all the locks it needs on one device or none (each try is
non-blocking and gives back what it took when one lock is busy), so waiting
jobs hold nothing and cannot deadlock one another; it polls until a device has
room. Devices are tried fullest first (the one with the fewest free slots that
still fits the job), which keeps whole devices free for jobs that need more
slots. Runs that share a machine must use the same K: slot locks of runs with
different K overlap (whole-device jobs are safe either way).
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


def _try_flock(path: Path, mode: int):
    """`path` opened and locked with `mode` (LOCK_EX or LOCK_SH), or None if another process holds it."""
    handle = open(path, "a")
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def try_lock(gpu: str):
    """An open, exclusively locked file for `gpu` (the whole device), or None if another process holds it."""
    return _try_flock(lock_dir() / f"gpu{gpu}.lock", fcntl.LOCK_EX)


def _release(handles: list) -> None:
    for handle in reversed(handles):  # slot locks before the device lock
        handle.close()


def try_claim(gpu: str, slots: int, slots_per_gpu: int) -> list | None:
    """The locks that give this process `slots` of the `slots_per_gpu` slots of `gpu`, or None
    (holding nothing) when the device does not have that many free."""
    if slots >= slots_per_gpu:
        handle = try_lock(gpu)
        return None if handle is None else [handle]
    device = _try_flock(lock_dir() / f"gpu{gpu}.lock", fcntl.LOCK_SH)
    if device is None:
        return None
    held = [device]
    for j in range(slots_per_gpu):
        handle = _try_flock(lock_dir() / f"gpu{gpu}.slot{j}.lock", fcntl.LOCK_EX)
        if handle is not None:
            held.append(handle)
            if len(held) - 1 == slots:
                return held
    _release(held)
    return None


def free_slots(gpu: str, slots_per_gpu: int) -> int:
    """How many slots of `gpu` are free right now (a hint: other processes may take them meanwhile)."""
    if slots_per_gpu <= 1:
        handle = try_lock(gpu)
        _release([handle] if handle else [])
        return int(handle is not None)
    held = try_claim(gpu, 1, slots_per_gpu)
    if held is None:
        return 0
    free = 1
    for j in range(slots_per_gpu):
        handle = _try_flock(lock_dir() / f"gpu{gpu}.slot{j}.lock", fcntl.LOCK_EX)
        if handle is not None:
            free += 1
            _release([handle])
    _release(held)
    return free


def held_slots(handles: list) -> list[int]:
    """Slot numbers of the slot locks among `handles` (empty for a whole-device claim)."""
    return [int(Path(h.name).name.split(".slot")[1].split(".")[0]) for h in handles if ".slot" in h.name]


def claim_gpu(wait_s: float = 3600.0, poll_s: float = 0.5, log=print, slots: int = 1,
              slots_per_gpu: int = 1) -> str | None:
    """Claim `slots` of the `slots_per_gpu` slots of one free local GPU (default: a whole GPU) and
    make that GPU the only visible one; returns its index.

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
    slots_per_gpu = max(1, slots_per_gpu)
    slots = min(max(1, slots), slots_per_gpu)
    deadline = time.monotonic() + wait_s
    while True:
        order = gpus
        if slots < slots_per_gpu:  # fullest device that fits first
            free = {gpu: free_slots(gpu, slots_per_gpu) for gpu in gpus}
            order = sorted((gpu for gpu in gpus if free[gpu] >= slots), key=lambda gpu: free[gpu])
        for gpu in order:
            handles = try_claim(gpu, slots, slots_per_gpu)
            if handles is not None:
                _held_locks.extend(handles)
                os.environ["CUDA_VISIBLE_DEVICES"] = gpu
                if slots_per_gpu == 1:
                    what = f"lock {handles[0].name}"
                elif slots == slots_per_gpu:
                    what = f"whole device, {slots} of {slots_per_gpu} slots; lock {handles[0].name}"
                else:
                    numbers = ",".join(map(str, held_slots(handles)))
                    what = f"{slots} of {slots_per_gpu} slots: {numbers}; locks in {lock_dir()}"
                log(f"claimed GPU {gpu} ({what}) at {time.time():.3f}")
                return gpu
        if time.monotonic() > deadline:
            raise TimeoutError(f"no GPU among {gpus} has {slots} of {slots_per_gpu} slots free after {wait_s:.0f} s "
                               f"(locks in {lock_dir()})")
        time.sleep(poll_s)


def cap_memory(fraction: float, log=print) -> bool:
    """Let this process's CUDA caching allocator use at most `fraction` of the (only visible) GPU's
    memory, so that a job overrunning its share runs out of memory itself instead of starving its
    neighbours on the device. Does nothing without CUDA; returns whether the cap is set."""
    import torch

    if not torch.cuda.is_available():
        log(f"no CUDA device: memory share {fraction:.3f} not applied")
        return False
    torch.cuda.set_per_process_memory_fraction(float(fraction), 0)
    log(f"capped CUDA memory at {fraction:.3f} of the device")
    return True
