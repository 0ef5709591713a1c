"""What tlsweep knows about each model, from the generated catalogue, without importing torch.

The Snakefile reads this (through workflow.study.grid) to check model names,
resolutions and depths (`last:N`, `keras:N`) when the config loads, and
(through workflow.train.weights) to know the ImageNet weights files to fetch;
workflow.train.models builds the models from it. torchvision models go by their
torchvision name, timm models by `timm:<name>` (facts about those are read from
timm when the model is built).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

from workflow.core.heads import head_name, head_parameterised_layers
from workflow.core.catalogue import load_catalogue, model_name_error, timm_hub_repo, timm_name


@dataclass(frozen=True)
class Backbone:
    """How to build a torchvision model, where its classifier sits, what input it takes."""

    name: str
    weights: str  # torchvision's default weights enum member, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    url: str  # where torchvision downloads them from
    weights_file: str  # their file name in torch's hub cache
    min_resolution: int  # smallest input side the model accepts (the weights' meta min_size)
    resolution: int  # the side the weights were evaluated at (their transforms' crop size)
    mean: list  # the normalisation the weights expect
    std: list
    classifier: str  # the top-level module holding the model's own classifier (the `own` head)
    keep: int  # leading layers of that classifier (norms, pools) the gap/mlp heads keep
    conv_classifier: bool  # the classes are scored by a convolution (SqueezeNet): gap/mlp pool its input
    grid_pool: bool  # its `avgpool` pools to a grid (VGG 7x7, AlexNet 6x6): made global for gap/mlp
    pre_dropout: str | None  # a dropout before its classifier, removed for the gap/mlp heads
    plain_input: bool  # its ImageNet weights expect (x - 0.5) / 0.5 (InceptionV3's transform_input)
    aux_logits_param: bool  # its constructor takes aux_logits
    init_weights_param: bool  # its constructor takes init_weights
    image_size_param: bool  # its constructor takes image_size (ViT: set to min_resolution, as its weights are)
    aux_resolution: int | None  # smallest input its auxiliary classifier accepts (InceptionV3)
    fixed_resolution: bool  # takes only min_resolution (ViT, MaxViT: position embeddings of one size)
    features: int  # width of the features the `gap` and `mlp` heads read
    layers: dict  # {head: the layers `last:N` counts with it}, the auxiliary classifier's left out
    aux_layers: int  # the layers of the auxiliary classifier (InceptionV3's, above aux_resolution), else 0
    keras_layers: int | None  # the layers `keras:N` counts (its keras.applications counterpart's), or None


@functools.cache
def torchvision_backbones() -> dict[str, Backbone]:
    """{name: Backbone} of every torchvision classification model in the catalogue."""
    names = {f.name for f in fields(Backbone)}
    return {name: Backbone(name=name, **{k: v for k, v in facts.items() if k in names})
            for name, facts in load_catalogue()["torchvision"].items()}


def check_model(name: str) -> None:
    """Raise ValueError with the closest names unless `name` is a known torchvision or `timm:` model."""
    problem = model_name_error(name)
    if problem:
        raise ValueError(problem)


def model_folder(name: str) -> str:
    """The model's part of a cell id: its name, with `timm:` written `timm-` (a path and wildcard-safe)."""
    return name.replace(":", "-", 1)


def get_backbone(name: str) -> Backbone:
    """The Backbone entry of a torchvision model name, or an error with the closest names."""
    check_model(name)
    if timm_name(name) is not None:
        raise ValueError(f"{name} is a timm model, not a torchvision one")
    return torchvision_backbones()[name]


def model_error(name: str, resolution: int, weights: str = "none") -> str | None:
    """Why model `name` cannot train on `resolution` x `resolution` images from `weights` (an unknown name,
    with the closest ones; a size it refuses; ImageNet weights a timm model lacks), or None when it can."""
    problem = model_name_error(name) or resolution_error(name, resolution)
    if problem is None and weights == "imagenet" and timm_name(name) is not None:
        try:
            timm_hub_repo(name)
        except ValueError as error:
            return str(error)
    return problem


def train_error(name: str, train: str, head: str | dict, resolution: int) -> str | None:
    """Why training `train` (what trains: `last:N`, `keras:N`, ...) of model `name` with `head` at `resolution`
    can only fail, or None (a timm model's layers are known only once it is built)."""
    kind, _, depth = train.partition(":")
    if kind not in ("last", "keras") or model_name_error(name) or timm_name(name) is not None:
        return None
    spec = get_backbone(name)
    if kind == "keras":
        if spec.keras_layers is None:
            known = ", ".join(sorted(n for n, b in torchvision_backbones().items() if b.keras_layers))
            return f"{name} has no Keras layer count (known for {known}); use last:N or from:<module>"
        if int(depth) > spec.keras_layers:
            return f"{name} has only {spec.keras_layers} layers as Keras counts them"
        return None
    with_aux = spec.aux_resolution is not None and resolution >= spec.aux_resolution
    head_layers = spec.layers[head] if isinstance(head, str) else spec.layers["gap"] - 1 + head_parameterised_layers(head)
    layers = head_layers + (spec.aux_layers if with_aux else 0)
    if int(depth) > layers:
        return f"{name} with the {head_name(head)!r} head has only {layers} layers at resolution {resolution}"
    return None


def resolution_error(name: str, resolution: int) -> str | None:
    """Why `name` cannot take `resolution` x `resolution` images, or None when it can (or is unknown)."""
    if model_name_error(name) or timm_name(name) is not None:
        return None
    spec = get_backbone(name)
    if spec.fixed_resolution and resolution != spec.min_resolution:
        return f"{name} takes only a resolution of {spec.min_resolution}, not {resolution}"
    if resolution < spec.min_resolution:
        return f"{name} needs a resolution of at least {spec.min_resolution}, not {resolution}"
    return None
