"""The model catalogue: every model `model:` accepts, read from a generated JSON file without torch.

The file, workflow/core/catalogue.json, is written by
`python -m workflow.train.catalogue_build` from the installed torchvision and
timm, and tests/test_catalogue.py keeps it in step with them. The Snakefile
checks model names against it when the config loads.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path

CATALOGUE_FILE = Path(__file__).with_name("catalogue.json")
IMAGENET_CLASSES = 1000
TIMM_PREFIX = "timm:"


@functools.cache
def load_catalogue() -> dict:
    """The catalogue: {"versions", "torchvision": {name: facts}, "timm": {"models": [...], "hub": {name: repo}}}."""
    return json.loads(CATALOGUE_FILE.read_text())


def timm_name(model: str) -> str | None:
    """`resnet50.a1_in1k` for `timm:resnet50.a1_in1k`, None for a torchvision model."""
    return model[len(TIMM_PREFIX):] if model.startswith(TIMM_PREFIX) else None


def closest(name: str, choices, prefix: str = "") -> str:
    """The closest names to `name` among `choices` (difflib), as a readable list."""
    found = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    return ", ".join(prefix + match for match in found) or "none"


def model_name_error(model: str) -> str | None:
    """Why `model` names no known model (with the closest names), or None when it names one."""
    catalogue = load_catalogue()
    name = timm_name(model)
    if name is None:
        if model in catalogue["torchvision"]:
            return None
        return (f"unknown model {model!r}; closest torchvision models: {closest(model, catalogue['torchvision'])} "
                f"(timm models are written timm:<name>)")
    timm = catalogue["timm"]
    if name in timm["models"] or name in timm["hub"]:
        return None
    choices = timm["hub"] if "." in name else timm["models"]
    return f"unknown timm model {name!r}; closest: {closest(name, choices, TIMM_PREFIX)}"


def timm_hub_repo(model: str) -> str:
    """The Hugging Face repository of the pretrained weights of `timm:<name>[.<tag>]`."""
    repo = load_catalogue()["timm"]["hub"].get(timm_name(model))
    if not repo:
        raise ValueError(f"{model}: timm has no pretrained weights on the Hugging Face hub for it; "
                         f"use weights: none or a checkpoint")
    return repo
