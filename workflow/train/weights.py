"""Put torchvision's ImageNet weights files into torch's cache, and timm's into the Hugging Face
cache, before any training job runs (which finds them there: `cached_weights_path`, `cached_timm_weights`).

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

from workflow.data.download import ChecksumError, DownloadError, download, file_digest
from workflow.core.backbones import get_backbone
from workflow.core.catalogue import timm_hub_repo, timm_name

HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repositories hold, preferred first
WITHOUT_WEIGHTS = "start the cells without them: `weights: none` (from scratch) or a pretrain cell (`weights: pretrain:<name>`)"


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


def cached_timm_weights(model: str) -> Path:
    """The cached weights file of `timm:<name>`, or FileNotFoundError naming it and the fetching command."""
    from huggingface_hub import try_to_load_from_cache

    repo = timm_hub_repo(model)
    for filename in WEIGHTS_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=hf_hub_cache())
        if isinstance(found, str):
            return Path(found)
    expected = hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots" / "<revision>" / WEIGHTS_FILES[0]
    raise FileNotFoundError(
        f"pretrained weights of {model} are not in the Hugging Face cache: {expected} is missing; the "
        f"fetch_weights rule puts them there before training (training jobs never download): "
        f"python -m workflow fetch-weights --timm {model}"
    )


def fetch_timm_weights(model: str) -> Path:
    """Download the weights of `timm:<name>` into the hub cache (on a machine with internet access)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo = timm_hub_repo(model)
    try:
        try:
            return Path(hf_hub_download(repo, WEIGHTS_FILES[0], cache_dir=hf_hub_cache()))
        except EntryNotFoundError:
            return Path(hf_hub_download(repo, WEIGHTS_FILES[1], cache_dir=hf_hub_cache()))
    except OSError as error:  # requests' and the hub's errors are OSErrors
        raise DownloadError(
            f"cannot download the weights of {model} from the Hugging Face hub ({repo}: {' '.join(str(error).split())}); "
            f"training reads them from {hf_hub_cache()} ($HF_HOME/hub). Run `python -m workflow fetch-weights --timm "
            f"{model}` on a machine with a connection and copy that cache's models--{repo.replace('/', '--')} folder "
            f"there, or {WITHOUT_WEIGHTS}") from None


def fetch_any_weights(url: str | None, dest: str | None, timm: str | None) -> Path:
    """fetch-weights: a torchvision file (`url` to `dest`) or the weights of timm model `timm`."""
    if timm:
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
    try:
        staged = download(url, dest.with_name(dest.name + ".unverified"))
    except DownloadError as error:
        cause = str(error).removeprefix(f"{url}: ")
        raise DownloadError(
            f"cannot download the weights file {name} from {url} ({cause}); training reads it from {dest.parent} "
            f"($TORCH_HOME/hub/checkpoints). Copy {name} there, or run `python -m workflow fetch-weights --url "
            f"{url} --out {name}` on a machine with a connection and copy the file there, or {WITHOUT_WEIGHTS}"
        ) from None
    found = file_digest(staged)
    if not found.startswith(match[1]):
        kept = dest.with_name(dest.name + ".bad")
        os.replace(staged, kept)
        raise ChecksumError(dest, "sha256", f"{match[1]}...", found, note=f"; downloaded bytes kept in {kept}")
    os.replace(staged, dest)
    return dest


def uncached_note(fetch: dict) -> str | None:
    """The line a run (a dry run too) prints about the weights files of weight_downloads() `fetch` that are
    not cached yet and will be downloaded before training; None when all are."""
    files = [name for name in fetch["torchvision"] if not (Path(fetch["torchvision_dir"]) / name).exists()]
    models = [model for repo, model in fetch["timm"].items()
              if not (Path(fetch["hub_cache"]) / f"models--{repo}" / "refs" / "main").exists()]
    into = ([f"into {fetch['torchvision_dir']}: {', '.join(files)}"] if files else []) + (
        [f"into {fetch['hub_cache']}: {', '.join(models)}"] if models else [])
    return f"ImageNet weights not cached yet, downloaded before training {'; '.join(into)}" if into else None


def weight_downloads(imagenet: dict[str, tuple[str, str]]) -> dict:
    """What the fetch rules download, from imagenet_files(): torchvision's {file name: URL} into its
    checkpoints folder, timm's {repository folder (`timm--resnet50.a1_in1k`): model} into the hub cache."""
    torchvision = {Path(path).name: url for model, (path, url) in imagenet.items() if timm_name(model) is None}
    timm = {timm_hub_repo(model).replace("/", "--"): model for model in imagenet if timm_name(model) is not None}
    return {"torchvision_dir": str(hub_dir() / "checkpoints"), "torchvision": torchvision,
            "hub_cache": str(hf_hub_cache()), "timm": timm}


