"""Regenerate the model catalogue (workflow/core/catalogue.json) from the installed torchvision and timm.

    python -m workflow.train.catalogue_build          (writes the file; takes a few minutes)

Every fact about a torchvision model comes from torchvision itself: its
default ImageNet weights (file, URL, minimum and default input size, mean and
std) from the weights enum, and where its classifier sits, how wide its pooled
features are and whether it takes other sizes from the model, built on the
CPU and run on the meta device. timm's entries are its model names and
pretrained tags; what a timm model needs is read from timm when it is built.
tests/test_catalogue.py keeps the file in step with the installed libraries.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import warnings

import timm
import torch
import torchvision
from torch import nn
from torchvision import models as tv

from workflow.core.backbones import Backbone
from workflow.core.catalogue import CATALOGUE_FILE, IMAGENET_CLASSES
from workflow.train.keras_depth import keras_counterpart, keras_layers
from workflow.train.layered_heads import strip_classifier
from workflow.core.heads import HEADS
from workflow.train.models import Classifier, new_head, own_head, parameterised_layers

CLASSIFIER_END = (nn.Dropout, nn.Linear, nn.Conv2d)  # a classifier's layers from here on are replaced


def weights_facts(name: str) -> dict:
    """What torchvision's default weights of `name` say: enum member, file, URL, sizes and normalisation."""
    weights = tv.get_model_weights(name).DEFAULT
    transforms = weights.transforms()
    return {
        "weights": f"{type(weights).__name__}.{weights.name}", "url": weights.url,
        "weights_file": weights.url.rsplit("/", 1)[1], "min_resolution": weights.meta["min_size"][0],
        "resolution": transforms.crop_size[0], "mean": list(transforms.mean), "std": list(transforms.std),
    }


def logits_layer(model: nn.Module) -> str:
    """The name of the layer that scores the ImageNet classes (a linear layer, or SqueezeNet's convolution)."""
    return [name for name, module in model.named_modules()
            if getattr(module, "out_features", getattr(module, "out_channels", None)) == IMAGENET_CLASSES
            and isinstance(module, (nn.Linear, nn.Conv2d))][-1]


def kept_layers(classifier: nn.Module) -> int:
    """How many leading layers of the model's classifier (norms, pools, flattens) the gap/mlp heads keep."""
    if not isinstance(classifier, nn.Sequential):
        return 0
    layers = list(classifier.children())
    return next((i for i, layer in enumerate(layers) if isinstance(layer, CLASSIFIER_END)), len(layers))


def runs_at(model: nn.Module, resolution: int, train: bool = False) -> tuple | None:
    """The output shape of `model` (on the meta device) for two images of `resolution`, None if it cannot."""
    model.train(train)
    try:
        with torch.no_grad():
            out = model(torch.empty(2, 3, resolution, resolution, device="meta"))
    except Exception:  # any refusal of the size: shape asserts, too-small pools, ...
        return None
    return tuple(out[0].shape if isinstance(out, tuple) else out.shape)


def aux_resolution(model: nn.Module, low: int, high: int) -> int | None:
    """The smallest input InceptionV3's auxiliary classifier takes (binary search on the meta device)."""
    if getattr(model, "AuxLogits", None) is None:
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if runs_at(model, mid, train=True) else (mid + 1, high)
    return low


def layer_counts(model: nn.Module, spec: Backbone) -> tuple[dict, int]:
    """The layers `train: last:N` counts in the classifier with each head (as models.split_head builds it),
    InceptionV3's auxiliary classifier left out, and the auxiliary classifier's own."""
    aux = getattr(model, "AuxLogits", None)
    aux_layers = 0 if aux is None else len(parameterised_layers(aux))
    counts = {}
    for head in HEADS:
        backbone = copy.deepcopy(model)
        if head == "own":
            top, _ = own_head(getattr(backbone, spec.classifier), IMAGENET_CLASSES)
            setattr(backbone, spec.classifier, nn.Identity())
        else:
            strip_classifier(backbone, spec)
            top = new_head(head, 1, IMAGENET_CLASSES, None)
        counts[head] = len(parameterised_layers(Classifier(backbone, top, head, ()))) - aux_layers
    return counts, aux_layers


def structure_facts(name: str, facts: dict) -> dict:
    """Where `name`'s classifier sits and what the gap/mlp heads read, from the model itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tv.get_model(name, weights=None)
        params = inspect.signature(type(model).__init__).parameters
        if "image_size" in params:  # as the weights set it (ViT's position embeddings are of one size)
            model = tv.get_model(name, weights=None, image_size=facts["min_resolution"])
    logits = logits_layer(model)
    classifier = logits.split(".")[0]
    pool = getattr(model, "avgpool", None)
    entry = {
        "classifier": classifier, "keep": kept_layers(getattr(model, classifier)),
        "conv_classifier": isinstance(model.get_submodule(logits), nn.Conv2d),
        "grid_pool": isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size not in (1, (1, 1)),
        "pre_dropout": next((n for n, m in model.named_children() if isinstance(m, nn.Dropout)), None),
        "plain_input": "transform_input" in params, "aux_logits_param": "aux_logits" in params,
        "init_weights_param": "init_weights" in params, "image_size_param": "image_size" in params,
    }
    model = model.to("meta")
    low, size = facts["min_resolution"], facts["resolution"]
    entry["aux_resolution"] = aux_resolution(model, low, size)
    entry["fixed_resolution"] = runs_at(model, low + 32) is None
    entry["keras_layers"] = len(keras_layers(model)) if keras_counterpart(model) else None
    spec = Backbone(name=name, **facts, **entry, features=0, layers={}, aux_layers=0)
    entry["layers"], entry["aux_layers"] = layer_counts(model, spec)
    strip_classifier(model, spec)
    entry["features"] = runs_at(model, max(low, 32) if not entry["fixed_resolution"] else low)[-1]
    return entry


def torchvision_catalogue(structure: bool = True) -> dict:
    """{name: facts} for every torchvision classification model."""
    names = tv.list_models(module=tv)
    entries = {name: weights_facts(name) for name in names}
    if structure:
        for name in names:
            entries[name].update(structure_facts(name, entries[name]))
    return entries


def timm_catalogue() -> dict:
    """timm's model names, and the Hugging Face repository of each pretrained one (`<name>` for its default
    weights, `<name>.<tag>` for each tag)."""
    from timm.models import get_pretrained_cfg

    pretrained = timm.list_models(pretrained=True)
    hub = {name: get_pretrained_cfg(name).hf_hub_id for name in pretrained}
    hub.update({name.split(".")[0]: get_pretrained_cfg(name.split(".")[0]).hf_hub_id for name in pretrained})
    return {"models": sorted(timm.list_models()), "hub": dict(sorted(hub.items()))}


def versions() -> dict:
    return {"torchvision": torchvision.__version__.split("+")[0], "timm": timm.__version__}


def write_catalogue() -> None:
    """Write the catalogue file from the installed torchvision and timm."""
    catalogue = {"versions": versions(), "torchvision": torchvision_catalogue(), "timm": timm_catalogue()}
    staged = f"{CATALOGUE_FILE}.tmp"
    with open(staged, "w") as out:
        json.dump(catalogue, out, indent=0, sort_keys=True)
        out.write("\n")
    os.replace(staged, CATALOGUE_FILE)
    print(f"{CATALOGUE_FILE}: {len(catalogue['torchvision'])} torchvision models, "
          f"{len(catalogue['timm']['models'])} timm models")


if __name__ == "__main__":
    write_catalogue()
