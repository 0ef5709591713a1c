"""A split streamed from its shard files by shuffled blocks.

The order of the split's blocks (one HDF5 chunk of consecutive images each) is
shuffled, then the images within a buffer of a few blocks, so every read is one
sequential chunk. Uncompressed chunks are memory-mapped (FFCV's data path):
each image is copied once, from the page cache straight into its batch, and the
kernel is asked to read the next blocks ahead. Compressed chunks are read and
decompressed by HDF5 in a background thread or in DataLoader worker processes,
and the buffers they return are cut into batches.
"""

from __future__ import annotations

import mmap
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from workflow.data.shards import shard_files


@dataclass(frozen=True)
class Block:
    """One chunk of consecutive images of one shard file's split; `offset` is the byte offset of
    its stored chunk in the file when the chunk is stored uncompressed (None otherwise)."""

    file: int
    start: int
    stop: int
    offset: int | None = None


def chunk_offsets(images: h5py.Dataset) -> list[int] | None:
    """File offsets of an image dataset's chunks, in order, or None if its chunks are filtered
    (compressed) or not all written."""
    if images.id.get_create_plist().get_nfilters():
        return None
    chunk = images.chunks[0]
    offsets = [images.id.get_chunk_info_by_coord((start, 0, 0, 0)).byte_offset
               for start in range(0, len(images), chunk)]
    return None if None in offsets else offsets


class MappedBlocks:
    """Every block of a split as an array view of its memory-mapped shard file (uncompressed chunks)."""

    def __init__(self, files: list[Path], blocks: list[Block], image_shape: tuple[int, ...]):
        self.files, self.maps = files, []
        for file in files:
            with open(file, "rb") as handle:
                self.maps.append(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
        self.blocks = blocks
        self.views = [np.frombuffer(self.maps[b.file], np.uint8, count=(b.stop - b.start) * int(np.prod(image_shape)),
                                    offset=b.offset).reshape(b.stop - b.start, *image_shape) for b in blocks]

    def will_need(self, block: int) -> None:
        """Ask the kernel to start reading a block into the page cache (returns at once)."""
        view, page = self.views[block], mmap.PAGESIZE
        start = self.blocks[block].offset
        aligned = start - start % page
        self.maps[self.blocks[block].file].madvise(mmap.MADV_WILLNEED, aligned, start + view.nbytes - aligned)

    def gather(self, out: np.ndarray, blocks: list[int], rows: list[int]) -> None:
        """out[i] = row rows[i] of block blocks[i]: one copy of each image, from the page cache."""
        views = self.views
        for i, (block, row) in enumerate(zip(blocks, rows)):
            out[i] = views[block][row]


class BlockReader:
    """Reads buffers of blocks; opens its own HDF5 handles in the thread or process that first calls it."""

    def __init__(self, files: list[Path], split: str, pin_memory: bool):
        self.files, self.split, self.pin_memory = files, split, pin_memory
        self.handles = self.scratch = None

    def __call__(self, task: tuple[tuple[Block, ...], np.ndarray | None]):
        """(uint8 images N x H x W x 3, labels) of the task's blocks, permuted by its permutation."""
        blocks, perm = task
        if self.handles is None:
            self.handles = [h5py.File(file, "r") for file in self.files]
        n = sum(block.stop - block.start for block in blocks)
        shape = (n, *self.handles[blocks[0].file][self.split]["images"].shape[1:])
        out = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin_memory)
        if perm is None:
            images = out.numpy()
        else:  # read into a scratch buffer kept between calls, then permute into `out`
            if self.scratch is None or self.scratch.shape[1:] != shape[1:] or len(self.scratch) < n:
                self.scratch = np.empty(shape, np.uint8)
            images = self.scratch[:n]
        labels = np.empty(n, np.int64)
        at = 0
        for block in blocks:
            group = self.handles[block.file][self.split]
            size = block.stop - block.start
            group["images"].read_direct(images, np.s_[block.start:block.stop], np.s_[at:at + size])
            group["labels"].read_direct(labels, np.s_[block.start:block.stop], np.s_[at:at + size])
            at += size
        if perm is None:
            return out, torch.from_numpy(labels)
        np.take(images, perm, axis=0, out=out.numpy(), mode="clip")  # "raise" would buffer `out`
        return out, torch.from_numpy(labels[perm])

    def close(self) -> None:
        for handle in self.handles or []:
            handle.close()
        self.handles = None


class _Tasks(torch.utils.data.IterableDataset):
    """A DataLoader worker's share of an epoch's tasks: every num_workers-th, so order is kept."""

    def __init__(self, reader: BlockReader, tasks: list):
        self.reader, self.tasks = reader, tasks

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.tasks[info.id::info.num_workers] if info else self.tasks
        try:
            for task in mine:
                yield self.reader(task)
        finally:
            self.reader.close()


def _read_ahead(reader: BlockReader, tasks: list, depth: int = 2):
    """Run the reader over `tasks` in one background thread, `depth` tasks ahead, in order."""
    pending = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="block-reader") as pool:
        try:
            pending.extend(pool.submit(reader, task) for task in tasks[:depth])
            for task in tasks[depth:]:
                result = pending.popleft().result()
                pending.append(pool.submit(reader, task))
                yield result
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.submit(reader.close).result()


def _rebatch(pieces, batch_size: int):
    """Cut a stream of (images, labels) pieces into batches, copying only where a batch spans two."""
    held, count = [], 0
    for images, labels in pieces:
        while len(labels):
            take = min(batch_size - count, len(labels))
            held.append((images[:take], labels[:take]))
            images, labels, count = images[take:], labels[take:], count + take
            if count == batch_size:
                yield _join(held)
                held, count = [], 0
    if held:
        yield _join(held)


def _task_size(task) -> int:
    """Images one read task returns."""
    return sum(block.stop - block.start for block in task[0])


def _drop_first(pieces, count: int):
    """The stream of (images, labels) pieces without its first `count` images (fewer than the first piece's)."""
    for images, labels in pieces:
        if count:
            images, labels, count = images[count:], labels[count:], 0
        yield images, labels


def _join(held):
    if len(held) == 1:
        return held[0]
    return torch.cat([h[0] for h in held]), torch.cat([h[1] for h in held])


class StreamSplit:
    """A split streamed from its shard files by shuffled blocks: memory-mapped when its chunks are
    uncompressed, otherwise read ahead by a background thread (`workers` 0) or by DataLoader
    worker processes, each with its own HDF5 handles."""

    def __init__(self, files: list[Path], split: str, device: torch.device, workers: int = 0, buffer_chunks: int = 4):
        self.files, self.split, self.device = files, split, torch.device(device)
        self.workers, self.buffer_chunks = workers, buffer_chunks
        self.blocks, labels, self.image_shape = [], [], None
        for i, file in enumerate(files):
            with h5py.File(file, "r") as f:
                if split not in f:
                    raise KeyError(f"{file}: no split {split!r}")
                images = f[split]["images"]
                chunk, self.image_shape = images.chunks[0], images.shape[1:]
                offsets = chunk_offsets(images) or [None] * len(range(0, len(images), chunk))
                self.blocks += [Block(i, s, min(s + chunk, len(images)), offset)
                                for s, offset in zip(range(0, len(images), chunk), offsets)]
                labels.append(f[split]["labels"][...])
        self.labels = torch.from_numpy(np.concatenate(labels)).to(self.device)
        if len(self.labels) == 0:
            raise ValueError(f"{files[0].parent}: split {split!r} is empty")
        sizes = [block.stop - block.start for block in self.blocks]
        self.block_starts = np.cumsum([0] + sizes[:-1])  # each block's first index in `labels`
        self.mapped = None  # MappedBlocks, opened on first use when every chunk is uncompressed

    @classmethod
    def load(cls, path: str | Path, split: str, device: torch.device, workers: int = 0,
             buffer_chunks: int = 4) -> "StreamSplit":
        """Stream a split of a prepared dataset's manifest or a shard file."""
        return cls(shard_files(path), split, device, workers, buffer_chunks)

    def __len__(self) -> int:
        return len(self.labels)

    def tasks(self, generator: torch.Generator | None) -> list[tuple[tuple[Block, ...], np.ndarray | None]]:
        """An epoch's reads: buffers of `buffer_chunks` blocks, each with the permutation of its images
        (blocks shuffled and permutations drawn from `generator`; in order and unpermuted without)."""
        order = torch.randperm(len(self.blocks), generator=generator).tolist() if generator is not None \
            else range(len(self.blocks))
        blocks = [self.blocks[i] for i in order]
        tasks = []
        for start in range(0, len(blocks), self.buffer_chunks):
            buffer = tuple(blocks[start:start + self.buffer_chunks])
            size = sum(block.stop - block.start for block in buffer)
            perm = torch.randperm(size, generator=generator).numpy() if generator is not None else None
            tasks.append((buffer, perm))
        return tasks

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0):
        """An iterator of (uint8 images N x 3 x H x W, labels) on the device, block-shuffled with
        `generator`. The order is drawn at the call; the first `skip` batches are left out (a resumed
        epoch) and the reads they would have needed are not made."""
        tasks, offset = self.tasks(generator), skip * batch_size
        if all(block.offset is not None for block in self.blocks):
            return self._mapped_batches(tasks, batch_size, offset)
        while tasks and offset >= _task_size(tasks[0]):
            offset -= _task_size(tasks.pop(0))
        return self._read_batches(tasks, batch_size, offset)

    def _mapped_batches(self, tasks, batch_size: int, offset: int, read_ahead: int = 2):
        """Batches gathered image by image from the memory-mapped chunks, from the `offset`-th image of
        the epoch on, the blocks of the next `read_ahead` batches requested from the kernel before they
        are needed."""
        if self.mapped is None:
            self.mapped = MappedBlocks(self.files, self.blocks, self.image_shape)
        index = {block: i for i, block in enumerate(self.blocks)}
        blocks, rows = [], []
        for buffer, perm in tasks:
            ids = np.concatenate([np.full(b.stop - b.start, index[b]) for b in buffer])
            local = np.concatenate([np.arange(b.stop - b.start) for b in buffer])
            if perm is not None:
                ids, local = ids[perm], local[perm]
            blocks.append(ids)
            rows.append(local)
        blocks, rows = np.concatenate(blocks)[offset:], np.concatenate(rows)[offset:]
        labels = self.labels[torch.from_numpy(self.block_starts[blocks] + rows).to(self.device)]
        used, first_row = np.unique(blocks, return_index=True)
        by_first_use = used[np.argsort(first_row)]
        needed_by = np.sort(first_row) // batch_size  # the batch that first needs each of by_first_use
        advised, pin = 0, self.device.type == "cuda"
        for n, start in enumerate(range(0, len(rows), batch_size)):
            while advised < len(by_first_use) and needed_by[advised] <= n + read_ahead:
                self.mapped.will_need(by_first_use[advised])
                advised += 1
            stop = min(start + batch_size, len(rows))
            out = torch.empty((stop - start, *self.image_shape), dtype=torch.uint8, pin_memory=pin)
            self.mapped.gather(out.numpy(), blocks[start:stop].tolist(), rows[start:stop].tolist())
            yield out.to(self.device, non_blocking=True).permute(0, 3, 1, 2), labels[start:stop]

    def _read_batches(self, tasks: list, batch_size: int, offset: int):
        """Batches from buffers read (and decompressed) by HDF5 in a background thread or workers,
        without the first `offset` images of the first task."""
        pin = self.device.type == "cuda"
        if self.workers:  # workers must not touch CUDA: the DataLoader pins in the main process
            reader = BlockReader(self.files, self.split, pin_memory=False)
            pieces = torch.utils.data.DataLoader(_Tasks(reader, tasks), batch_size=None, num_workers=self.workers,
                                                 pin_memory=pin)
        else:
            pieces = _read_ahead(BlockReader(self.files, self.split, pin_memory=pin), tasks)
        for images, labels in _rebatch(_drop_first(pieces, offset), batch_size):
            images = images.to(self.device, non_blocking=True)
            yield images.permute(0, 3, 1, 2), labels.to(self.device, non_blocking=True)
