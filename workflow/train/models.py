"""torchvision and timm backbones with a new head, their starting weights, and what trains.

A model is ``Classifier(backbone, head)``: the backbone is the torchvision
(or timm, see workflow.train.timm_models) model with its classifier taken off,
the head maps its features to the classes. Heads (``training.head``):

- ``gap``: global average pool -> dropout (0.5) -> linear;
- ``mlp``: global average pool -> linear 256 -> batch norm -> ReLU -> linear 128
  -> batch norm -> ReLU -> dropout (0.2) -> linear;
- ``own``: the model's own classifier (VGG's and AlexNet's fully connected
  stack, MobileNetV2's dropout + linear, ResNet's fc...) with a new last layer;
- a head of layers (workflow.core.heads): a pooling, dense layers, batch norms,
  dropouts and activations as a paper lists them, then the output layer
  (``layered_head``).

Where the classifier sits and how wide the features are come from the
generated catalogue (workflow.core.catalogue), never from a hand-written table.

Layers, as counted by ``train: last:N``, are the modules that own parameters
directly (convolutions, batch norms, linear layers), in registration order,
which in torchvision's models is the order of the forward pass; the head's
layers come last, so ``last:1`` with the ``gap`` head trains the head alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.inception import InceptionOutputs

from workflow.integrity import load_torch
from workflow.core.backbones import check_model, get_backbone, resolution_error
from workflow.core.catalogue import timm_name
from workflow.core.heads import canonical_head, head_error, head_name
from workflow.train.errors import ResolutionError, StartingWeightsError, TrainValueError
from workflow.train.keras_depth import KERAS_PREFIX, keras_trainable
from workflow.train.layered_heads import TwoClassLogits, layered_head, strip_classifier
from workflow.train.timm_models import build_timm, split_timm_head
from workflow.train.weights import cached_weights_path, fetch_command

PLAIN_MEAN = (0.5, 0.5, 0.5)
PLAIN_STD = (0.5, 0.5, 0.5)

HEAD_DROPOUT = {"gap": 0.5, "mlp": 0.2}
TRAIN_VALUES = "'head', 'all', 'last:N', 'keras:N' or 'from:<module>'"


class Classifier(nn.Module):
    """A backbone that outputs features, followed by a head.

    In training mode an InceptionV3 backbone also returns its auxiliary
    classifier's logits: forward then returns (logits, aux_logits).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, head_kind: str | dict, new_layers: tuple[str, ...]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_kind = head_kind
        self.new_layers = new_layers  # freshly initialised layers, never loaded from a checkpoint

    def forward(self, x: torch.Tensor):
        features = self.backbone(x)
        if isinstance(features, InceptionOutputs):
            return self.head(features.logits), features.aux_logits
        return self.head(features)


def num_classes_of(model: Classifier) -> int:
    """How many classes a Classifier's head scores: its last linear (or convolutional) layer's width, or
    two for a sigmoid output."""
    if any(isinstance(module, TwoClassLogits) for module in model.head.modules()):
        return 2
    last = [module for module in model.head.modules() if isinstance(module, (nn.Linear, nn.Conv2d))][-1]
    return getattr(last, "out_features", getattr(last, "out_channels", None))


def imagenet_weights(name: str):
    """torchvision's default ImageNet weights enum member for a model name."""
    enum_name, member = get_backbone(name).weights.split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def imagenet_normalization(name: str) -> tuple[tuple, tuple]:
    """The mean and std that `name`'s ImageNet weights expect."""
    spec = get_backbone(name)
    if spec.plain_input:
        return PLAIN_MEAN, PLAIN_STD
    return tuple(spec.mean), tuple(spec.std)


def build_torchvision(name: str, imagenet: bool) -> nn.Module:
    """The torchvision model, with ImageNet weights from the cache (never downloaded here)."""
    spec = get_backbone(name)
    kwargs = {}
    if imagenet and spec.plain_input:
        kwargs["transform_input"] = False  # our normaliser already gives the (x - 0.5) / 0.5 input it expects
    if not imagenet:
        kwargs.update({"init_weights": True} if spec.init_weights_param else {})
        kwargs.update({"image_size": spec.min_resolution} if spec.image_size_param else {})
        kwargs.update({"aux_logits": False} if spec.aux_logits_param and spec.aux_resolution is None else {})
        return torchvision.models.get_model(name, weights=None, **kwargs)
    path = cached_weights_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"ImageNet weights of {name} are not in the cache: {path} is missing; the fetch_weights rule "
            f"puts them there before training (training jobs never download): {fetch_command(name)}"
        )
    return torchvision.models.get_model(name, weights=imagenet_weights(name), **kwargs)


def read_weights_file(path: str | Path) -> dict:
    """A tlsweep checkpoint, or a torchvision-format state dict wrapped as {"state_dict": ...}."""
    loaded = load_torch(path, map_location="cpu", weights_only=False)  # DamagedFileError names the file
    if isinstance(loaded, dict) and loaded.get("failed"):
        raise StartingWeightsError(f"{path} holds no weights: cell {loaded['cell']} failed ({loaded['error']})")
    if isinstance(loaded, dict) and "model" in loaded and "model_name" in loaded:
        return loaded
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return {"state_dict": loaded}
    raise StartingWeightsError(f"{path} is neither a tlsweep checkpoint nor a torchvision state dict")


def load_state(module: nn.Module, state: dict, path, source_model: str, model_name: str, strict: bool = True):
    """load_state_dict with an error that names the file and both models."""
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        raise StartingWeightsError(
            f"checkpoint {path} (model {source_model!r}) does not fit model {model_name!r}: {error}") from None


def own_head(own: nn.Module, num_classes: int) -> tuple[nn.Module, tuple[str, ...]]:
    """The model's own classifier with a new last layer scoring `num_classes`, and that layer's name.

    A convolutional classifier (SqueezeNet's 1x1 convolution and pool) reads the flattened feature map
    its model hands on, unflattened to one column (the same result for a 1x1 convolution)."""
    if isinstance(own, nn.Linear):
        return nn.Linear(own.in_features, num_classes), ("head",)
    last = [name for name, layer in own.named_modules() if isinstance(layer, (nn.Linear, nn.Conv2d))][-1]
    layer = own.get_submodule(last)
    if isinstance(layer, nn.Linear):
        own.set_submodule(last, nn.Linear(layer.in_features, num_classes))
        return own, (f"head.{last}",)
    own.set_submodule(last, nn.Conv2d(layer.in_channels, num_classes, layer.kernel_size))
    return nn.Sequential(nn.Unflatten(1, (layer.in_channels, -1, 1)), *own, nn.Flatten()), (f"head.{int(last) + 1}",)


def split_head(model: nn.Module, name: str, head: str | dict, num_classes: int, dropout: float | None,
               resolution: int | None = None):
    """Detach the classifier from `model` and return (new head, names of its fresh layers)."""
    if head == "own" and dropout is not None:
        raise ValueError("training.dropout: the 'own' head keeps the model's own dropout; leave it unset")
    problem = head_error(head)
    if problem:
        raise ValueError(problem)
    if isinstance(head, dict):
        if dropout is not None:
            raise ValueError("training.dropout: a head of layers lists its own dropout layers; leave it unset")
        return layered_head(model, name, canonical_head(head), num_classes, resolution), ("head",)
    if timm_name(name) is not None:
        own, features = split_timm_head(model, head, num_classes)
        return own or new_head(head, features, num_classes, dropout), ("head",)
    spec = get_backbone(name)
    if head == "own":
        own = getattr(model, spec.classifier)
        setattr(model, spec.classifier, nn.Identity())
        return own_head(own, num_classes)
    strip_classifier(model, spec)
    return new_head(head, spec.features, num_classes, dropout), ("head",)


def new_head(head: str, features: int, num_classes: int, dropout: float | None) -> nn.Module:
    """A fresh `gap` or `mlp` head reading `features` pooled features."""
    p = HEAD_DROPOUT[head] if dropout is None else dropout
    if head == "gap":
        return nn.Sequential(nn.Dropout(p), nn.Linear(features, num_classes))
    return nn.Sequential(
        nn.Linear(features, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
        nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
        nn.Dropout(p), nn.Linear(128, num_classes),
    )


def fit_aux_classifier(model: nn.Module, name: str, num_classes: int, resolution: int | None) -> tuple[str, ...]:
    """Give InceptionV3's auxiliary classifier a new last layer, or drop it below the size it needs."""
    low = get_backbone(name).aux_resolution
    if low is None:
        return ()
    if resolution is not None and resolution < low:
        model.aux_logits, model.AuxLogits = False, None
        return ()
    model.AuxLogits.fc = nn.Linear(model.AuxLogits.fc.in_features, num_classes)
    return ("backbone.AuxLogits.fc",)


def load_checkpoint(model: Classifier, checkpoint: dict, path, name: str) -> None:
    """Load a tlsweep checkpoint's weights into every layer of `model` that is not new.

    The head transfers only between two `own` heads (its last layer aside);
    otherwise the head starts fresh.
    """
    fresh = model.new_layers + (() if checkpoint.get("head") == model.head_kind == "own" else ("head",))
    skip = tuple(layer + "." for layer in fresh)
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith(skip)}
    load_state(model, state, path, checkpoint["model_name"], name, strict=False)
    missing = [k for k in model.state_dict() if not k.startswith(skip) and k not in state]
    if missing:
        raise StartingWeightsError(
            f"checkpoint {path} (model {checkpoint['model_name']!r}) does not fit model {name!r}: "
            f"it lacks {len(missing)} weights, e.g. {missing[:3]}"
        )


def build_classifier(name: str, num_classes: int, weights: str, dropout: float | None = None,
                     init: str | Path | None = None, head: str | dict = "gap", resolution: int | None = None):
    """A Classifier with the given head and starting weights, and its input normalisation.

    `weights` is "imagenet", "none", or anything else meaning "load `init`":
    a tlsweep checkpoint (a pretrain cell's best.pt; its normalisation comes
    with it) or a torchvision-format state dict (ImageNet normalisation).
    `dropout` None means the head's default. Returns (model, (mean, std)).
    """
    check_model(name)
    if resolution is not None and (problem := resolution_error(name, resolution)):
        raise ResolutionError(problem)
    if timm_name(name) is None:
        model, imagenet_norm = build_torchvision(name, imagenet=weights == "imagenet"), imagenet_normalization(name)
    else:
        model, imagenet_norm = build_timm(name, weights == "imagenet", resolution)
    normalization = imagenet_norm if weights == "imagenet" else (PLAIN_MEAN, PLAIN_STD)
    checkpoint = None
    if weights not in ("imagenet", "none"):
        if init is None:
            raise ValueError(f"weights {weights!r} need a checkpoint file")
        checkpoint = read_weights_file(init)
        if "state_dict" in checkpoint:
            load_state(model, checkpoint["state_dict"], init, "torchvision state dict", name)
            normalization = imagenet_norm
        else:
            normalization = tuple(map(tuple, checkpoint.get("normalization", normalization)))
    new_aux = fit_aux_classifier(model, name, num_classes, resolution) if timm_name(name) is None else ()
    new_head, new_head_layers = split_head(model, name, head, num_classes, dropout, resolution)
    classifier = Classifier(model, new_head, canonical_head(head), new_head_layers + new_aux)
    if checkpoint is not None and "model" in checkpoint:
        load_checkpoint(classifier, checkpoint, init, name)
    return classifier, normalization


def parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that own parameters directly, in registration (forward) order."""
    return [(n, m) for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def set_trainable(model: Classifier, train: str) -> None:
    """Set which parameters train: `head`, `all`, the last N layers (`last:N`) or a backbone module
    and everything registered after it, with the head (`from:<module>`)."""
    if train == "all":
        model.requires_grad_(True)
    elif train == "head":
        model.requires_grad_(True)
        model.backbone.requires_grad_(False)
    elif train.startswith("last:") and train[5:].isdigit() and int(train[5:]) > 0:
        layers = parameterised_layers(model)
        n = int(train[5:])
        if n > len(layers):
            raise TrainValueError(
                f"train {train!r}: this model with the {head_name(model.head_kind)!r} head has only {len(layers)} "
                f"parameterised layers"
            )
        model.requires_grad_(False)
        for _, layer in layers[-n:]:
            for parameter in layer.parameters(recurse=False):  # a layer's own, not its sub-layers'
                parameter.requires_grad_(True)
    elif train.startswith(KERAS_PREFIX):  # the last N layers as Keras counts them (workflow/train/keras_depth.py)
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        for module in keras_trainable(model.backbone, train):
            model.backbone.get_submodule(module).requires_grad_(True)
    elif train.startswith("from:") and len(train) > 5:
        model.requires_grad_(False)
        for _, module in modules_from(model, train[5:]):
            module.requires_grad_(True)
    else:
        raise TrainValueError(f"unknown value {train!r} for what trains; choose {TRAIN_VALUES}")


def modules_from(model: Classifier, name: str) -> list[tuple[str, nn.Module]]:
    """The parameterised layers from backbone module `name` (e.g. `layer4`) on, the head's included."""
    modules = dict(model.backbone.named_modules())
    if name not in modules or not name:
        tops = [n for n, _ in model.backbone.named_children()]
        raise TrainValueError(f"train 'from:{name}': the backbone has no module {name!r}; its top-level modules "
                         f"are {tops}")
    layers = parameterised_layers(model)
    first = next((i for i, (n, _) in enumerate(layers)
                  if n == f"backbone.{name}" or n.startswith(f"backbone.{name}.")), None)
    if first is None:
        raise TrainValueError(f"train 'from:{name}': module {name!r} holds no parameters")
    return layers[first:]


def set_train_mode(model: Classifier, train: str) -> None:
    """Training mode, except frozen parts: a `head`-frozen backbone is in eval mode,
    and every batch norm whose parameters are frozen keeps its running statistics."""
    model.train()
    if train == "head":
        model.backbone.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def batch_norm_training(model: nn.Module) -> bool:
    """Whether any batch norm of `model` is in training mode (and so needs more than one image)."""
    return any(m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
