"""Put torchvision's ImageNet weights files into torch's cache before any training job runs.

On a cluster only the login node may reach the internet, so the fetch_weights
rule runs there (a local rule) and training jobs read the cached file.
torchvision names each file after the first hex digits of its SHA-256
(``resnet18-f37072fd.pth``); the download is checked against that prefix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from workflow.data.download import ChecksumError, download, file_digest

HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention


def imagenet_files(models) -> dict[str, tuple[str, str]]:
    """{model: (cached file, URL)} of the ImageNet weights of `models`; imports torch only if any."""
    models = sorted(set(models))
    if not models:
        return {}
    from workflow.train.models import cached_weights_path, imagenet_weights

    return {name: (str(cached_weights_path(name)), imagenet_weights(name).url) for name in models}


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
