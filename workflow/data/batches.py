"""Where a prepared dataset's splits are served from: whole on the device or streamed from its shards.

A split that fits in ``training.loader.memory_share`` of the device's memory
(GPU memory on a GPU, RAM on the CPU) is loaded once as a ``DeviceSplit``; a
larger one is a ``StreamSplit``. Either serves batches as uint8 (N, 3, H, W)
tensors in channels-last memory, which ``Normalizer`` turns into float batches.
On the CPU, ``load_splits`` has glibc keep freed memory for reuse: a fresh batch
of tens of MB would otherwise be faulted in page by page every time, which
costs more than converting it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import h5py
import torch

from workflow.data.device_split import DeviceSplit
from workflow.data.shard_check import check_shards
from workflow.data.shards import shard_files
from workflow.data.stream_split import StreamSplit


def device_memory(device: torch.device) -> int:
    """Bytes of memory on the device that this process may use: the GPU's (its share of it when the
    job holds slots of a shared GPU, see workflow.gpu.devices.cap_memory), or the machine's RAM for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        share = torch.cuda.get_per_process_memory_fraction(device)
        return int(torch.cuda.get_device_properties(device).total_memory * share)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def split_bytes(files: list[Path], split: str) -> int:
    """Bytes a split's images and labels take in memory."""
    total = 0
    for file in files:
        with h5py.File(file, "r") as f:
            images = f[split]["images"]
            total += images.size + 8 * len(images)
    return total


def keep_freed_memory() -> None:
    """Have glibc keep freed blocks of up to 1 GiB for reuse instead of returning them to the
    system (mmap and trim thresholds); nothing happens without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def load_splits(path: str | Path, splits, device: torch.device, loader: dict) -> list:
    """Each split of a prepared dataset (its manifest or a shard file) as a DeviceSplit while they fit
    in `memory_share` of the device's memory, in the order given, and as a StreamSplit once they do
    not (`loader` is `training.loader`). A shard whose bytes differ from its checksums is a DamagedFileError."""
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    check_shards(path)  # against their checksums, once per shard per machine
    files = shard_files(path)
    budget = loader["memory_share"] * device_memory(device)
    out = []
    for split in splits:
        size = split_bytes(files, split)
        if size <= budget:
            out.append(DeviceSplit.load(path, split, device))
            budget -= size
        else:
            out.append(StreamSplit.load(path, split, device, loader["workers"], loader["buffer_chunks"]))
    return out
