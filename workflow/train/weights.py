"""Put torchvision's ImageNet weights files into torch's cache before any training job runs.

On a cluster only the login node may reach the internet, so the fetch_weights
rule runs there (a local rule) and training jobs read the cached file.
torchvision names each file after the first hex digits of its SHA-256
(``resnet18-f37072fd.pth``); the download is checked against that prefix.
Imports no torch: the Snakefile asks it for the files when the config loads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from workflow.data.download import ChecksumError, download, file_digest
from workflow.core.backbones import get_backbone
from workflow.core.catalogue import timm_hub_repo, timm_name

HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention


def hub_dir() -> Path:
    """torch.hub.get_dir() without torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else
    ~/.cache/torch/hub."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def hf_hub_cache() -> Path:
    """huggingface_hub's cache folder, read from the environment at call time: $HF_HUB_CACHE, else
    $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    if os.getenv("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    home = os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    return Path(os.path.expanduser(home)) / "hub"


def timm_ref_file(model: str) -> Path:
    """The hub cache's record that the weights repository of `timm:<name>` was fetched (refs/main)."""
    return hf_hub_cache() / f"models--{timm_hub_repo(model).replace('/', '--')}" / "refs" / "main"


def cached_weights_path(name: str) -> Path:
    """Where the ImageNet weights of model `name` are cached: torchvision's <hub dir>/checkpoints/<file>,
    or for a timm model the hub cache's refs/main of its repository."""
    if timm_name(name) is not None:
        return timm_ref_file(name)
    return hub_dir() / "checkpoints" / get_backbone(name).weights_file


def weights_url(name: str) -> str:
    """Where the ImageNet weights of model `name` come from: torchvision's URL, or `timm:<name>`."""
    return name if timm_name(name) is not None else get_backbone(name).url


def fetch_command(name: str) -> str:
    """The command that puts the ImageNet weights of model `name` into the cache (on a login node)."""
    if timm_name(name) is not None:
        return f"python -m workflow fetch-weights --timm {name}"
    return f"python -m workflow fetch-weights --url {weights_url(name)} --out {cached_weights_path(name)}"


def fetch_any_weights(url: str | None, dest: str | None, timm: str | None) -> Path:
    """fetch-weights: a torchvision file (`url` to `dest`) or the weights of timm model `timm`."""
    if timm:
        from workflow.train.timm_models import fetch_timm_weights

        return fetch_timm_weights(timm)
    if not (url and dest):
        raise SystemExit("fetch-weights: give --url and --out, or --timm")
    return fetch_weights(url, dest)


def imagenet_files(models) -> dict[str, tuple[str, str]]:
    """{model: (cached file, URL)} of the ImageNet weights of `models`."""
    return {name: (str(cached_weights_path(name)), weights_url(name)) for name in sorted(set(models))}


def fetch_weights(url: str, dest: str | os.PathLike) -> Path:
    """Download a torchvision weights file to `dest`, resuming, and check its SHA-256 prefix.

    `dest` appears only whole and verified; a file that fails the check is
    kept as `<dest>.bad` and ChecksumError is raised.
    """
    dest = Path(dest)
    name = os.path.basename(urlparse(url).path)
    match = HASH_PREFIX.search(name)
    if match is None:
        raise ValueError(f"{url}: the file name {name!r} carries no SHA-256 prefix to check")
    if dest.exists() and file_digest(dest).startswith(match[1]):
        return dest
    staged = download(url, dest.with_name(dest.name + ".unverified"))
    found = file_digest(staged)
    if not found.startswith(match[1]):
        kept = dest.with_name(dest.name + ".bad")
        os.replace(staged, kept)
        raise ChecksumError(dest, "sha256", f"{match[1]}...", found, note=f"; downloaded bytes kept in {kept}")
    os.replace(staged, dest)
    return dest


def weight_downloads(imagenet: dict[str, tuple[str, str]]) -> dict:
    """What the fetch rules download, from imagenet_files(): torchvision's {file name: URL} into its
    checkpoints folder, timm's {repository folder (`timm--resnet50.a1_in1k`): model} into the hub cache."""
    torchvision = {Path(path).name: url for model, (path, url) in imagenet.items() if timm_name(model) is None}
    timm = {timm_hub_repo(model).replace("/", "--"): model for model in imagenet if timm_name(model) is not None}
    return {"torchvision_dir": str(hub_dir() / "checkpoints"), "torchvision": torchvision,
            "hub_cache": str(hf_hub_cache()), "timm": timm}


