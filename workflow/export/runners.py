"""What runs an exported or rebuilt model on a normalised float batch and returns its logits.

`TorchRunner` wraps a torch module (a rebuilt Classifier or a loaded TorchScript module);
`OnnxRunner` an onnxruntime session (CUDA when onnxruntime offers it and the device is a GPU).
`preprocess_description` says how to prepare an image for a model and read its output (preprocess.json);
`read_preprocess` reads it back, refusing a damaged one in one line naming the file and the key.
`open_export` opens an export folder once its files match its SHA256SUMS (workflow.export.checksums);
`open_model` opens what `predict` is given: an export folder or a cell's best.pt (rebuilt, its
description made into the same preprocess dict).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from workflow.data.resize import RESIZE_METHODS, resize_mode_of
from workflow.export.checkpoint import CheckpointError, ModelCard, load_model
from workflow.export.checksums import REEXPORT, verify_checksums
from workflow.export.index import FILES
from workflow.core import paths

PREPROCESS = paths.PREPROCESS_JSON
INPUT_NAME, OUTPUT_NAME = "images", "logits"
PREPROCESS_FORMAT = 1
DECODE = ("RGB uint8 with EXIF orientation applied; 16-bit images scaled to 8 bits; transparency composited on "
          "white (workflow.data.sources.images.decode)")


def preprocess_description(card: ModelCard, chosen: dict | None = None, files: dict | None = None,
                           checks: dict | None = None) -> dict:
    """preprocess.json: how to prepare an image for the model of `card` and read its output."""
    size = card.resolution
    return {
        "format": PREPROCESS_FORMAT, "cell": card.cell, "model": card.model, "head": card.head,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32", "layout": "NCHW",
                  "channels": "RGB", "size": size},
        "decode": DECODE,
        "resize": {"size": [size, size], "method": card.resize_method, "mode": resize_mode_of(card.resize_method),
                   "function": "workflow.data.prepare.prepare_files"},
        "normalization": {"formula": "(pixel / 255 - mean) / std, per channel", "mean": list(card.mean),
                          "std": list(card.std)},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", card.num_classes],
                   "meaning": "logits; softmax gives class probabilities"},
        "class_names": list(card.class_names), "chosen": chosen, "files": files or {}, "checks": checks or {},
        "checkpoint": {"file": card.path, "epoch": card.epoch}, "versions": card.versions,
    }


def three_numbers(value) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(type(x) in (int, float) for x in value)


# What predict reads of preprocess.json: (key, whether a value is good, what a good value is)
PREPROCESS_KEYS = (
    ("model", lambda v: isinstance(v, str) and v != "", "a model name"),
    ("input.size", lambda v: type(v) is int and v > 0, "a positive whole number"),
    ("resize.method", lambda v: v in RESIZE_METHODS.values(), "a resize method this version prepares images with"),
    ("normalization.mean", three_numbers, "three numbers"),
    ("normalization.std", lambda v: three_numbers(v) and min(v) > 0, "three positive numbers"),
    ("class_names", lambda v: isinstance(v, list) and v != [] and all(isinstance(n, str) for n in v),
     "a list of class names"),
    ("files", lambda v: isinstance(v, dict) and v != {} and all(FILES.get(f) == n for f, n in v.items()),
     f"formats and their files, of {FILES}"),
)


def read_preprocess(path: str | Path) -> dict:
    """An export's preprocess.json; CheckpointError naming the file (and the key) when it is not JSON, or a
    key predict reads is missing or not of its kind."""
    path = Path(path)
    try:
        preprocess = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); {REEXPORT}") from None
    for key, good, kind in PREPROCESS_KEYS:
        value = preprocess
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise CheckpointError(f"{path}: {key} is missing; {REEXPORT}")
            value = value[part]
        if not good(value):
            raise CheckpointError(f"{path}: {key} is {json.dumps(value)[:60]}, not {kind}; {REEXPORT}")
    return preprocess


class TorchRunner:
    """A torch module in eval mode on `device`: logits of a float batch, without gradients."""

    def __init__(self, module, device: torch.device):
        self.module, self.device = module.eval(), torch.device(device)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(batch.to(self.device)).float()


class OnnxRunner:
    """An ONNX model in onnxruntime: logits of a float batch, as a CPU tensor."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        self.device = torch.device("cpu")  # batches are handed over as NumPy arrays

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])


def load_torchscript(path: str | Path, device: torch.device | str = "cpu") -> TorchRunner:
    """A TorchScript file's model on `device`."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still supported
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location=torch.device(device))
    return TorchRunner(module, torch.device(device))


def open_export(folder: str | Path, device: torch.device | str = "cpu", fmt: str | None = None):
    """An export folder's model in `fmt` and its preprocess.json: (runner, preprocess dict), once
    preprocess.json is whole (`read_preprocess`) and every file matches the folder's SHA256SUMS. Without
    `fmt` its TorchScript model runs, or its ONNX model when it is the only one."""
    folder = Path(folder)
    if not (folder / PREPROCESS).is_file():
        raise CheckpointError(f"{folder} is not an export folder: it has no {PREPROCESS}")
    preprocess = read_preprocess(folder / PREPROCESS)
    files = preprocess["files"]
    verify_checksums(folder, [PREPROCESS, *files.values()])
    fmt = fmt or ("torchscript" if "torchscript" in files else "onnx")
    if fmt not in files:
        raise CheckpointError(f"export folder {folder} holds no {fmt} model (it has {', '.join(files.values())})")
    if fmt == "torchscript":
        return load_torchscript(folder / files[fmt], device), preprocess
    return OnnxRunner(folder / files[fmt], device), preprocess


def open_model(source: str | Path, device: torch.device | str = "cpu"):
    """(runner, preprocess dict) of an export folder or of a cell's checkpoint file (best.pt)."""
    source = Path(source)
    if source.is_dir():
        return open_export(source, device)
    model, card = load_model(source, device=device)
    return TorchRunner(model, torch.device(device)), preprocess_description(card)
