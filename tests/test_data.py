"""Reading prepared splits: whole on the device or streamed by shuffled blocks from several shards."""

import json

import h5py
import numpy as np
import pytest
import torch

from workflow.data.batches import device_memory, load_splits, split_bytes
from workflow.data.device_split import DeviceSplit
from workflow.data.stream_split import MappedBlocks, StreamSplit, chunk_offsets
from workflow.data.shards import read_split, shard_files, shard_writer
from workflow.core.cell import DEFAULT_TRAINING, merge

CHUNK = 8
SIZES = (50, 37, 8)  # images of the train split in each shard: partial last chunks, one single-chunk shard


def encode(indices: np.ndarray) -> np.ndarray:
    """4x4 images whose first pixel spells their global index."""
    images = np.zeros((len(indices), 4, 4, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = indices // 256, indices % 256
    return images


def decode(images: torch.Tensor) -> list[int]:
    pixel = images[:, :, 0, 0].to(torch.int64)  # (N, 3, H, W) uint8
    return (pixel[:, 0] * 256 + pixel[:, 1]).tolist()


def write_dataset(folder, compression=None):
    """A manifest over three shards; each split's label is its global index mod 5."""
    shards, start = [], {"train": 0, "val": 0, "test": 0}
    for part, n in enumerate(SIZES):
        path = folder / f"shard-{part}-of-3.h5"
        counts = {"train": n, "val": 3, "test": 2}
        with shard_writer(path, counts, 4, {"class_names": '["a", "b", "c", "d", "e"]'}, chunk_images=CHUNK,
                          compression=compression) as out:
            for split, count in counts.items():
                index = np.arange(start[split], start[split] + count)
                out[split].add(encode(index), index % 5)
                start[split] += count
        shards.append({"file": path.name})
    manifest = folder / "r4.json"
    manifest.write_text(json.dumps({"class_names": ["a", "b", "c", "d", "e"], "shards": shards}))
    return manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("compressed"), compression="gzip")


def spy_reads(monkeypatch, compressed: bool) -> list:
    """Record the image reads of a stream: (file, first, stop) of every HDF5 read of a compressed
    split, or of every block a memory-mapped split asks the kernel to read."""
    reads = []
    if compressed:
        original = h5py.Dataset.read_direct

        def spy(self, dest, source_sel=None, dest_sel=None):
            if self.name.endswith("images"):
                reads.append((self.file.filename, source_sel.start, source_sel.stop))
            return original(self, dest, source_sel, dest_sel)

        monkeypatch.setattr(h5py.Dataset, "read_direct", spy)
    else:
        original = MappedBlocks.will_need

        def spy(self, block):
            b = self.blocks[block]
            reads.append((str(self.files[b.file]), b.start, b.stop))
            return original(self, block)

        monkeypatch.setattr(MappedBlocks, "will_need", spy)
    return reads


@pytest.mark.parametrize("kind", ["mapped", "compressed"])
def test_block_shuffle_reads_whole_chunks_and_covers_every_image_once(kind, dataset, compressed, monkeypatch):
    path = dataset if kind == "mapped" else compressed
    reads = spy_reads(monkeypatch, kind == "compressed")
    split = StreamSplit.load(path, "train", "cpu", buffer_chunks=3)
    n = sum(SIZES)
    generator = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        reads.clear()
        seen, labels = [], []
        for images, batch_labels in split.batches(10, generator):
            assert images.shape[1:] == (3, 4, 4) and len(batch_labels) <= 10
            seen += decode(images)
            labels += batch_labels.tolist()
        assert sorted(seen) == list(range(n)), "every image exactly once per epoch"
        assert labels == [i % 5 for i in seen], "labels travel with their images"
        size_of = {str(file): n for file, n in zip(shard_files(path), SIZES)}
        runs = sorted(reads)
        assert all(start % CHUNK == 0 and stop == min(start + CHUNK, size_of[file]) for file, start, stop in runs)
        assert sum(stop - start for _, start, stop in runs) == n and len(runs) == len(set(runs))
        epochs.append(seen)
    assert epochs[0] != epochs[1] and epochs[0] != sorted(epochs[0])
    # each buffer of three shuffled chunks comes out whole before the next begins
    offsets = np.cumsum((0,) + SIZES)
    at = 0
    for blocks, _ in split.tasks(torch.Generator().manual_seed(0)):
        members = {offsets[b.file] + i for b in blocks for i in range(b.start, b.stop)}
        assert set(epochs[0][at:at + len(members)]) == members
        at += len(members)


def test_stream_is_seeded_and_in_stored_order_without_generator(dataset):
    split = StreamSplit.load(dataset, "train", "cpu", buffer_chunks=2)
    images, labels = read_split(dataset, "train")
    in_order = [(decode(x), y.tolist()) for x, y in split.batches(16)]
    assert sum((ids for ids, _ in in_order), []) == list(range(sum(SIZES)))
    assert torch.equal(split.labels, torch.from_numpy(labels))
    a = [decode(x) for x, _ in split.batches(16, torch.Generator().manual_seed(3))]
    b = [decode(x) for x, _ in split.batches(16, torch.Generator().manual_seed(3))]
    assert a == b


def test_worker_processes_and_memory_maps_give_the_thread_reader_batches(dataset, compressed):
    thread = StreamSplit.load(compressed, "train", "cpu", workers=0, buffer_chunks=2)
    workers = StreamSplit.load(compressed, "train", "cpu", workers=2, buffer_chunks=2)
    mapped = StreamSplit.load(dataset, "train", "cpu", buffer_chunks=2)
    a, b, c = ([(decode(x), y.tolist()) for x, y in split.batches(7, torch.Generator().manual_seed(1))]
               for split in (thread, workers, mapped))
    assert a == b == c


def test_chunks_are_mapped_only_when_stored_uncompressed(dataset, compressed):
    with h5py.File(shard_files(dataset)[0]) as plain, h5py.File(shard_files(compressed)[0]) as packed:
        offsets = chunk_offsets(plain["train"]["images"])
        assert chunk_offsets(packed["train"]["images"]) is None
        assert len(offsets) == -(-SIZES[0] // CHUNK) and len(set(offsets)) == len(offsets)
        # the bytes at each offset are the chunk's images, as HDF5 reads them
        raw = shard_files(dataset)[0].read_bytes()
        for i, offset in enumerate(offsets):
            stored = plain["train"]["images"][i * CHUNK:(i + 1) * CHUNK]
            assert raw[offset:offset + stored.nbytes] == stored.tobytes()


def test_device_split_reads_every_shard(dataset):
    split = DeviceSplit.load(dataset, "train", "cpu")
    assert len(split) == sum(SIZES)
    assert sum((decode(x) for x, _ in split.batches(20)), []) == list(range(sum(SIZES)))
    shuffled = sum((decode(x) for x, _ in split.batches(20, torch.Generator().manual_seed(0))), [])
    assert sorted(shuffled) == list(range(sum(SIZES))) and shuffled != sorted(shuffled)
    x, _ = next(split.batches(4, torch.Generator()))
    assert x.shape == (4, 3, 4, 4) and x.is_contiguous(memory_format=torch.channels_last)


def test_splits_load_whole_while_they_fit_the_memory_share(dataset):
    files = shard_files(dataset)
    assert split_bytes(files, "train") == sum(SIZES) * (48 + 8)
    loader = {"memory_share": 0.0, "workers": 0, "buffer_chunks": 4}
    assert [type(s) for s in load_splits(dataset, ("train", "val"), "cpu", loader)] == [StreamSplit, StreamSplit]
    share = (split_bytes(files, "train") + split_bytes(files, "val") + 1) / device_memory("cpu")
    kinds = load_splits(dataset, ("train", "val", "test"), "cpu", {**loader, "memory_share": share})
    assert [type(s) for s in kinds] == [DeviceSplit, DeviceSplit, StreamSplit]


def test_training_from_a_streamed_split_with_augmentation(tmp_path):
    from test_training import make_cell
    from workflow.data.prepare import prepare_dataset
    from workflow.train.cell import train_cell

    spec = {"source": "digits", "classes": [0, 1], "split": {"train": 0.6, "val": 0.2, "test": 0.2}}
    prepare_dataset("d", spec, 16, tmp_path / "r16.h5", tmp_path / "r16.json")
    cell = make_cell(training={
        "stages": [{"name": "all", "train": "all", "epochs": 1}],
        "augment": {"hflip": True, "crop": 2, "rotation": 10},
        "loader": {"memory_share": 0.0},
    })
    metrics = train_cell(cell, tmp_path / "r16.json", tmp_path / "cell", threads=1, log=lambda _: None)
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 1
    assert sum(map(sum, metrics["confusion_matrix"])) == len(read_split(tmp_path / "r16.json", "test")[1])
