"""What runs an exported or rebuilt model on a normalised float batch and returns its logits.

`TorchRunner` wraps a torch module (a rebuilt Classifier or a loaded TorchScript module);
`OnnxRunner` an onnxruntime session (CUDA when onnxruntime offers it and the device is a GPU).
`open_model` opens what `predict` is given: an export folder (its TorchScript, else its ONNX
model, with its preprocess.json) or a cell's best.pt (rebuilt, its description made into the
same preprocess dict).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from workflow.export.checkpoint import CheckpointError, load_model
from workflow.export.index import FILES
from workflow.core import paths

PREPROCESS = paths.PREPROCESS_JSON
INPUT_NAME, OUTPUT_NAME = "images", "logits"


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


def open_export(folder: str | Path, device: torch.device | str = "cpu"):
    """An export folder's model and its preprocess.json: (runner, preprocess dict). Its TorchScript
    model is preferred; the ONNX model runs when it is the only one."""
    folder = Path(folder)
    if not (folder / PREPROCESS).is_file():
        raise CheckpointError(f"{folder} is not an export folder: it has no {PREPROCESS}")
    preprocess = json.loads((folder / PREPROCESS).read_text())
    if (folder / FILES["torchscript"]).is_file():
        return load_torchscript(folder / FILES["torchscript"], device), preprocess
    if (folder / FILES["onnx"]).is_file():
        return OnnxRunner(folder / FILES["onnx"], device), preprocess
    raise CheckpointError(f"export folder {folder} holds neither {FILES['torchscript']} nor {FILES['onnx']}")


def open_model(source: str | Path, device: torch.device | str = "cpu"):
    """(runner, preprocess dict) of an export folder or of a cell's checkpoint file (best.pt)."""
    from workflow.export.export import preprocess_description

    source = Path(source)
    if source.is_dir():
        return open_export(source, device)
    model, card = load_model(source, device=device)
    return TorchRunner(model, torch.device(device)), preprocess_description(card)
