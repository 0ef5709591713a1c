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
from workflow.train.backbones import get_backbone

HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention


def hub_dir() -> Path:
    """torch.hub.get_dir() without torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else
    ~/.cache/torch/hub."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def cached_weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights file of model `name`: <hub dir>/checkpoints/<file>."""
    return hub_dir() / "checkpoints" / get_backbone(name).weights_file


def weights_url(name: str) -> str:
    """Where torchvision downloads the ImageNet weights file of model `name` from."""
    return get_backbone(name).url


def fetch_command(name: str) -> str:
    """The command that puts the ImageNet weights of model `name` into the cache (on a login node)."""
    path = cached_weights_path(name)
    return f"python -m workflow fetch-weights --url {weights_url(name)} --out {path}"


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
