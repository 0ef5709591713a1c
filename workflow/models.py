"""torchvision backbones with a new head, their starting weights, and freezing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PLAIN_MEAN = (0.5, 0.5, 0.5)
PLAIN_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Backbone:
    """How to build a torchvision model and where its classifier sits."""

    builder: str  # function name in torchvision.models
    weights: str  # weights enum member, e.g. "MobileNet_V2_Weights.IMAGENET1K_V1"
    classifier: str  # attribute replaced by Identity, leaving pooled features
    features: int  # width of the pooled features


BACKBONES = {
    "mobilenet_v2": Backbone("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", "classifier", 1280),
    "resnet18": Backbone("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", 512),
    "resnet50": Backbone("resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc", 2048),
    "densenet121": Backbone("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", "classifier", 1024),
}


class Classifier(nn.Module):
    """A backbone that outputs pooled features, followed by a head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def get_backbone(name: str) -> Backbone:
    """The Backbone entry for a model name, or an error listing the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def imagenet_weights(name: str):
    """torchvision's ImageNet weights enum member for a model name."""
    enum_name, member = get_backbone(name).weights.split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def build_backbone(name: str, imagenet: bool) -> nn.Module:
    """A torchvision model whose classifier is replaced by Identity (outputs pooled features)."""
    spec = get_backbone(name)
    weights = imagenet_weights(name) if imagenet else None
    model = getattr(torchvision.models, spec.builder)(weights=weights)
    setattr(model, spec.classifier, nn.Identity())
    return model


def load_backbone_checkpoint(backbone: nn.Module, path: str | Path, model_name: str) -> dict:
    """Load the backbone part of a tlsweep checkpoint; returns the checkpoint's metadata."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = {k[len("backbone."):]: v for k, v in checkpoint["model"].items() if k.startswith("backbone.")}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {path} (model {checkpoint.get('model_name', '?')!r}) does not fit "
            f"model {model_name!r}: {error}"
        ) from None
    return checkpoint


def build_classifier(name: str, num_classes: int, weights: str, dropout: float, init: str | Path | None = None):
    """Model with a global-average-pool -> dropout -> linear head, and its input normalisation.

    `weights` is "imagenet", "none", or anything else meaning "load `init`"
    (an upstream cell's or a user's checkpoint).
    Returns (model, (mean, std)).
    """
    backbone = build_backbone(name, imagenet=weights == "imagenet")
    normalization = (IMAGENET_MEAN, IMAGENET_STD) if weights == "imagenet" else (PLAIN_MEAN, PLAIN_STD)
    if weights not in ("imagenet", "none"):
        if init is None:
            raise ValueError(f"weights {weights!r} need a checkpoint file")
        checkpoint = load_backbone_checkpoint(backbone, init, name)
        normalization = tuple(map(tuple, checkpoint.get("normalization", normalization)))
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(get_backbone(name).features, num_classes))
    return Classifier(backbone, head), normalization


def apply_freeze(model: Classifier, policy: str) -> None:
    """Set which parameters train: `head` (backbone frozen) or `all`."""
    if policy not in ("head", "all"):
        raise ValueError(f"unknown freezing policy {policy!r}; choose 'head' or 'all'")
    model.requires_grad_(True)
    if policy == "head":
        model.backbone.requires_grad_(False)


def set_train_mode(model: Classifier, policy: str) -> None:
    """Training mode, except a frozen backbone keeps its batch-norm statistics (eval mode)."""
    model.train()
    if policy == "head":
        model.backbone.eval()
