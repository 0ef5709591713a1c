"""timm models (`model: timm:<name>[.<tag>]`): built from timm, pretrained weights from the Hugging Face cache.

Everything about a timm model comes from timm: its weights' repository and
normalisation from its `pretrained_cfg`, the classifier and the width of what
feeds it from `get_classifier()`, the features the `gap` and `mlp` heads read
from `reset_classifier(0)`. Training jobs never download: the weights file is
looked up in the hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
~/.cache/huggingface/hub) and handed to timm as a local file; the
fetch_weights rule (or `python -m workflow fetch-weights --timm <name>`) fills
the cache on a machine with internet access.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from workflow.core.catalogue import timm_name
from workflow.train.weights import cached_timm_weights


def import_timm():
    """timm, or an error saying that the model needs it."""
    try:
        import timm
    except ImportError:
        raise ValueError("timm: models need the timm package (pinned in pyproject.toml and envs/tlsweep.yaml), "
                         "which is not installed") from None
    return timm


def build_timm(model: str, imagenet: bool, resolution: int | None) -> tuple[nn.Module, tuple[tuple, tuple]]:
    """The timm model (pretrained from the local cache when `imagenet`) and the normalisation its weights
    expect; a model with position embeddings (ViT) is made for `resolution` (timm resamples them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # training never asks the hub (read when huggingface_hub loads)
    timm = import_timm()
    name = timm_name(model)
    kwargs = {"pretrained": imagenet}
    if imagenet:
        kwargs["pretrained_cfg_overlay"] = {"file": str(cached_timm_weights(model))}
    try:
        built = timm.create_model(name, img_size=resolution, **kwargs) if resolution else None
    except TypeError:  # a model without position embeddings takes any size
        built = None
    built = built or timm.create_model(name, **kwargs)
    cfg = built.pretrained_cfg
    return built, (tuple(cfg["mean"]), tuple(cfg["std"]))


def split_timm_head(model: nn.Module, head: str, num_classes: int) -> tuple[nn.Module | None, int]:
    """Take the classifier off a timm model: (a new `own` classifier or None, the width feeding it)."""
    classifier = model.get_classifier()
    features = classifier.in_features if isinstance(classifier, nn.Linear) else model.num_features
    model.reset_classifier(0)  # the model now outputs its pooled (pre-logits) features
    return (nn.Linear(features, num_classes) if head == "own" else None), features
