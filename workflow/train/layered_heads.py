"""Heads of layers (workflow.core.heads) built in torch: the backbone made to hand on what the head's pooling
reads, the layers as Keras counts them, and a sigmoid output as two classes' logits.

`strip_classifier` takes a torchvision model's own classifier off for every head but `own`; a head of layers
then pools as its first layer says: `gap` the model's own global average pool, `gmp` and `flatten` its
feature map (`pool_backbone`).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from workflow.core.backbones import Backbone, get_backbone
from workflow.core.catalogue import timm_name
from workflow.core.heads import output_classes_error
from workflow.train.errors import HeadError


def strip_classifier(model: nn.Module, spec: Backbone) -> None:
    """Make `model` output the features the gap and mlp heads read: its classifier replaced (its leading
    norms and pools kept; a convolutional one by a global pool), a grid pool made global, a dropout
    before the classifier removed."""
    own = getattr(model, spec.classifier)
    if spec.conv_classifier:
        setattr(model, spec.classifier, nn.AdaptiveAvgPool2d(1))
    elif spec.keep:
        setattr(model, spec.classifier, own[:spec.keep])
    else:
        setattr(model, spec.classifier, nn.Identity())
    if spec.grid_pool:
        model.avgpool = nn.AdaptiveAvgPool2d(1)
    if spec.pre_dropout:
        setattr(model, spec.pre_dropout, nn.Identity())


class TwoClassLogits(nn.Module):
    """A sigmoid output's one logit z as the two-class logits (0, z): their softmax is (1 - sigmoid(z),
    sigmoid(z)) and their cross-entropy is the binary cross-entropy of z, so the loss, the scores and the
    metrics of two classes need nothing of their own."""

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(logit), logit], dim=1)


class DenseNetMap(torchvision.models.DenseNet):
    """A DenseNet up to its feature map, ReLU'd (where Keras's DenseNet without its top ends)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features(x))


class MobileNetV2Map(torchvision.models.MobileNetV2):
    """A MobileNetV2 up to its feature map (its pooling is a function call, not a module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


FEATURE_MAPS = {torchvision.models.DenseNet: DenseNetMap, torchvision.models.MobileNetV2: MobileNetV2Map}
ACTIVATION_MODULES = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "selu": nn.SELU, "silu": nn.SiLU,
                      "swish": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}
POOL_MODULES = {"gap": nn.AdaptiveAvgPool2d, "gmp": nn.AdaptiveMaxPool2d}


def pool_backbone(model: nn.Module, name: str, pooling: str) -> list[nn.Module]:
    """Make `model` hand on what a head of layers pools, and return the head's first layers: `gap` keeps the
    model's own global average pool (`strip_classifier`); `gmp` and `flatten` take its feature map, by
    replacing its global pool module (`avgpool`) or, for DenseNet and MobileNetV2, whose pooling is a
    function call, by ending the model at its feature map. Other models (ViT, SqueezeNet, ...) take `gap`."""
    if timm_name(name) is not None:
        model.reset_classifier(0, global_pool={"gap": "avg", "gmp": "max", "flatten": ""}[pooling])
        return [nn.Flatten()]
    spec = get_backbone(name)
    strip_classifier(model, spec)
    if pooling == "gap":
        return []
    if isinstance(getattr(model, "avgpool", None), nn.AdaptiveAvgPool2d):
        model.avgpool = nn.AdaptiveMaxPool2d(1) if pooling == "gmp" else nn.Identity()
        return [nn.Flatten()]  # the model flattens what its pool hands on
    if type(model) in FEATURE_MAPS:
        model.__class__ = FEATURE_MAPS[type(model)]
        return [POOL_MODULES[pooling](1), nn.Flatten()] if pooling in POOL_MODULES else [nn.Flatten()]
    raise HeadError(f"training.head.layers[0]: {pooling!r} needs {name}'s feature map, which tlsweep "
                          f"reaches only in models with a global pool module, DenseNets and MobileNetV2; use gap")


def feature_width(backbone: nn.Module, first: list[nn.Module], resolution: int | None, name: str) -> int:
    """The width of what the head's first layers make of `backbone`'s output, from one image of `resolution`
    (zeros; on the meta device where the model is)."""
    if resolution is None:
        raise HeadError(f"training.head: the width of {name}'s flattened feature map needs the resolution")
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        output = backbone(torch.zeros(1, 3, resolution, resolution, device=device))
    backbone.train(was_training)
    return int(nn.Sequential(*first)(output).shape[1])


def layered_head(model: nn.Module, name: str, head: dict, num_classes: int, resolution: int | None) -> nn.Module:
    """A head of layers (workflow.core.heads, canonical) on `model`: its pooling, its layers in order, then the
    output layer: one unit per class (softmax), or one unit (sigmoid) whose logit `TwoClassLogits` turns
    into two classes' logits. Dense layers start as Keras's do (Glorot uniform, zero bias); batch norms take
    Keras's epsilon (1e-3) and momentum (0.99, torch's 0.01)."""
    pooling, *layers = head["layers"]
    problem = output_classes_error(head, num_classes)
    if problem:
        raise HeadError(f"training.head.output: {problem}")
    first = pool_backbone(model, name, pooling)
    if pooling == "flatten":
        width = feature_width(model, first, resolution, name)
    else:
        width = model.num_features if timm_name(name) is not None else get_backbone(name).features
    modules = list(first)
    for layer in layers + [{"dense": 1 if head["output"] == "sigmoid" else num_classes}]:
        if layer == "batch_norm":
            modules.append(nn.BatchNorm1d(width, eps=1e-3, momentum=0.01))
        elif "dense" in layer:
            dense = nn.Linear(width, layer["dense"])
            nn.init.xavier_uniform_(dense.weight)
            nn.init.zeros_(dense.bias)
            modules.append(dense)
            width = layer["dense"]
        elif "dropout" in layer:
            modules.append(nn.Dropout(layer["dropout"]))
        if isinstance(layer, dict) and layer.get("activation", "linear") != "linear":
            modules.append(ACTIVATION_MODULES[layer["activation"]]())
    if head["output"] == "sigmoid":
        modules.append(TwoClassLogits())
    return nn.Sequential(*modules)
