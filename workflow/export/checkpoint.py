"""Reading a cell's checkpoint (best.pt) and rebuilding its model in one call.

A checkpoint describes itself (workflow.train.state.checkpoint_description): model name, head,
classes, resolution, normalisation, the cell config and versions. `load_model` rebuilds the
Classifier from that description without any starting weights (no download, nothing initialised:
the modules are made on the meta device and take the stored tensors), loads the weights strictly and
returns it in eval mode with a `ModelCard`. Older checkpoints, written before they described
themselves, are read from their cell config; their class names are then "0".."k-1".
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from workflow.data.resize import RESIZE_METHOD
from workflow.integrity import DamagedFileError, check_cell_file
from workflow.train.models import build_classifier


class CheckpointError(ValueError):
    """A file that is no usable checkpoint of a trained cell or export folder, or not of the model asked for."""


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint says about its model: how to rebuild it and how to prepare its input."""

    path: str
    model: str
    head: str | dict  # gap | mlp | own, or a head of layers (workflow.core.heads)
    num_classes: int
    class_names: tuple[str, ...]
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_method: str
    cell: str | None
    epoch: int | None
    aux_classifier: bool
    versions: dict

    def to_dict(self) -> dict:
        return {**asdict(self), "class_names": list(self.class_names), "mean": list(self.mean),
                "std": list(self.std)}


def read_checkpoint(path: str | Path) -> dict:
    """The content of a cell's best.pt; CheckpointError naming the file for one that cannot be read,
    a failed cell's marker (no weights) or a file that is no tlsweep checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint ({error})") from None
    if isinstance(loaded, dict) and loaded.get("failed"):
        raise CheckpointError(f"{path} holds no weights: cell {loaded.get('cell')} failed ({loaded.get('error')})")
    if not (isinstance(loaded, dict) and "model" in loaded and "model_name" in loaded):
        raise CheckpointError(f"{path} is not a tlsweep checkpoint (a cell's best.pt)")
    return loaded


def head_width(state: dict, head: str | dict) -> int:
    """The number of classes of an older checkpoint: rows of its head's last linear weight."""
    weights = [key for key in state if key.startswith("head.") and key.endswith(".weight") and state[key].ndim == 2]
    if not weights:
        raise CheckpointError(f"the {head!r} head holds no linear layer")
    last = max(weights, key=lambda key: [int(p) if p.isdigit() else -1 for p in key.split(".")[1:-1]])
    return int(state[last].shape[0])


def model_card(checkpoint: dict, path: str | Path) -> ModelCard:
    """The description of a checkpoint (`read_checkpoint`), older layouts included."""
    cell = checkpoint.get("cell") or {}
    state = checkpoint["model"]
    try:
        num_classes = checkpoint.get("num_classes") or head_width(state, checkpoint["head"])
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    names = checkpoint.get("class_names") or [str(i) for i in range(num_classes)]
    resolution = checkpoint.get("resolution") or cell.get("resolution")
    if resolution is None:
        raise CheckpointError(f"{path} does not say the resolution its model was trained at")
    mean, std = checkpoint["normalization"]
    aux = checkpoint.get("aux_classifier", any(key.startswith("backbone.AuxLogits.") for key in state))
    return ModelCard(
        path=str(path), model=checkpoint["model_name"], head=checkpoint["head"], num_classes=int(num_classes),
        class_names=tuple(map(str, names)), resolution=int(resolution), mean=tuple(map(float, mean)),
        std=tuple(map(float, std)), resize_method=checkpoint.get("resize_method", RESIZE_METHOD),
        cell=cell.get("id"), epoch=checkpoint.get("epoch"), aux_classifier=bool(aux),
        versions=checkpoint.get("versions") or {},
    )


def rebuild(card: ModelCard, state: dict):
    """The Classifier `card` describes, holding the weights `state` (strictly: every key, every shape)."""
    with torch.device("meta"):  # no initialisation: the stored tensors replace the parameters
        model, _ = build_classifier(card.model, card.num_classes, "none", head=card.head, resolution=card.resolution)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"{card.path}: its weights do not fit model {card.model!r} with the "
                              f"{card.head!r} head: {error}") from None
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise CheckpointError(f"{card.path} lacks {len(left)} tensors of its model, e.g. {left[:3]}")
    return model


def load_model(path: str | Path, model: str | None = None, device: str | torch.device = "cpu"):
    """Rebuild a cell's trained model from its checkpoint in one call: (Classifier in eval mode on
    `device`, ModelCard). With `model`, a checkpoint of another model is refused (CheckpointError
    naming the file and both models), as are failed cells' markers, files that are no checkpoint and a
    cell's best.pt that is not the file its metrics.json recorded (its SHA-256)."""
    try:
        check_cell_file(path, always=True, move_aside=False)
    except DamagedFileError as error:
        raise CheckpointError(str(error)) from None
    checkpoint = read_checkpoint(path)
    if model is not None and checkpoint["model_name"] != model:
        raise CheckpointError(f"{path} holds a {checkpoint['model_name']!r} model, not the {model!r} asked for")
    card = model_card(checkpoint, path)
    classifier = rebuild(card, checkpoint["model"])
    return classifier.to(device).eval(), card
