"""Several small cells per GPU: slots, memory probes, and how many slots a cell needs.

With ``resources.slots_per_gpu: K`` (K > 1) every local GPU counts as K slots of
``device memory x headroom / K`` each. A cell needs the fewest slots ``s``
(1..K) whose memory, ``s x device x headroom / K``, holds

- the peak memory of its training, measured once per combination of what
  drives it (model, resolution, batch size, head, optimizer state, precision,
  evaluation batch size) by the ``probe_memory`` rule: a few training steps
  with every layer trainable (the worst freezing) and an evaluation pass on
  synthetic uint8 batches, ``torch.cuda.max_memory_allocated``; plus
- the splits the cell keeps whole on the device: ``training.loader.memory_share``
  of its share, filled in the order train, val, test as ``workflow.data.batches.load_splits``
  does (a training job with a share sees only its share, see ``device_memory``).

Without a measured peak (no probe yet, or a probe that ran without a GPU) a
cell takes all K slots: memory nobody measured is never shared. A cell that
needs more than one whole device also takes K slots (and may then run out of
memory, which is recorded as ``oom`` as always). With K = 1 every cell needs
1 slot, the whole device.

The Snakefile computes a job's slots (its share: the ``gpu_slots`` resource) here and
passes that number, K and the headroom to the job on its command line.
Probes are shared by studies under ``<results_dir>/probes/<key>/`` where the
key names the torch version of the Snakemake process and the local GPU model
(``probe_key``): another GPU or torch version probes again.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from workflow.core import paths
from workflow.gpu.devices import local_gpus
from workflow.core.backbones import model_folder
from workflow.core.cell import Cell
from workflow.core.heads import head_name

SPLITS = ("train", "val", "test")  # the order in which training loads them


@dataclass(frozen=True)
class SlotSettings:
    """K slots per GPU, the share of device memory the slots split, and where the probes are."""

    per_gpu: int = 1
    headroom: float = 0.9
    probe_dir: Path | None = None


def slot_settings(resources: dict, results_dir: str | Path) -> SlotSettings:
    """A study's slot settings from its `resources` (K = 1 and no probes when it sets no `slots_per_gpu`)."""
    default = SlotSettings()  # the defaults, as the schema states them (x-default, not filled into the config)
    per_gpu = resources.get("slots_per_gpu", default.per_gpu)
    probe_dir = Path(paths.probes_folder(results_dir, probe_key())) if per_gpu > 1 else None
    return SlotSettings(per_gpu=per_gpu, headroom=resources.get("gpu_headroom", default.headroom), probe_dir=probe_dir)


def optimizer_states(optimizer: str, momentum: float) -> int:
    """Tensors of optimizer state per parameter: Adam(W) 2, RMSprop 1 (+1 with momentum), SGD 0 (+1)."""
    if optimizer in ("adam", "adamw"):
        return 2
    return (1 if optimizer == "rmsprop" else 0) + (1 if momentum > 0 else 0)


def probe_spec(cell: Cell) -> dict:
    """What a cell's peak GPU memory depends on materially. The optimizer counts by its state per
    parameter, the most of any of the cell's stages."""
    training = cell.training
    stages = cell.stages()
    return {
        "model": cell.model,
        "resolution": int(cell.resolution),
        "batch_size": int(cell.batch_size),
        "head": training.head,
        "optimizer_states": max(optimizer_states(s["optimizer"], s["momentum"]) for s in stages),
        "precision": training.precision,
        "eval_batch_size": int(training.eval_batch_size),
    }


PROBE_NAME = r"[^/]+-r\d+-bs\d+-[^/-]+-opt\d+-[^/-]+-eval\d+"  # what probe_name gives: the probe rule's wildcard


def probe_name(spec: dict) -> str:
    """The probe's file name without .json, e.g. mobilenet_v2-r160-bs32-gap-opt2-auto-eval256."""
    return (f"{model_folder(spec['model'])}-r{spec['resolution']}-bs{spec['batch_size']}-{head_name(spec['head'])}"
            f"-opt{spec['optimizer_states']}-{spec['precision']}-eval{spec['eval_batch_size']}")


def gpu_names() -> list[str]:
    """Names of the local GPUs that jobs may claim (those in $TLSWEEP_GPUS, if set), from nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return []
    names = dict(line.split(", ", 1) for line in result.stdout.strip().splitlines() if ", " in line)
    return [names[gpu] for gpu in local_gpus() if gpu in names]


def torch_version() -> str:
    """The installed torch's version, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


def probe_key(torch: str | None = None, gpus: list[str] | None = None) -> str:
    """The folder name that keeps probes of one torch version and GPU model apart, e.g.
    torch2.14.0-NVIDIA-H100-80GB-HBM3 (`nogpu` where nvidia-smi lists none)."""
    names = sorted(set(gpu_names() if gpus is None else gpus))
    gpu = "_".join(re.sub(r"[^A-Za-z0-9.+]+", "-", name).strip("-") for name in names) or "nogpu"
    return f"torch{torch or torch_version()}-{gpu}"


def read_probe(path: str | Path) -> dict | None:
    """A probe's record, or None when there is none yet."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def split_mb(path: str | Path) -> list[float]:
    """MB that each split (train, val, test) of a prepared dataset takes in memory, images and labels
    (the manifest JSON, or a shard file), as workflow.data.batches.split_bytes counts them."""
    path = Path(path)
    if path.suffix == ".json":
        manifest = json.loads(path.read_text())
        per_image = manifest["resolution"] ** 2 * 3 + 8
        return [manifest["totals"][split] * per_image / 2**20 for split in SPLITS]
    import h5py  # only for a manifest without totals: the Snakefile imports this module

    with h5py.File(path, "r") as f:
        return [(f[split]["images"].size + 8 * len(f[split]["images"])) / 2**20 for split in SPLITS]


def on_device_mb(splits_mb, budget_mb: float) -> float:
    """MB of the splits kept whole on the device within `budget_mb` (the others are streamed)."""
    kept = 0.0
    for size in splits_mb:
        if size <= budget_mb:
            kept += size
            budget_mb -= size
    return kept


def slots_needed(peak_mb: float | None, device_mb: float | None, per_gpu: int, headroom: float,
                 splits_mb=(), memory_share: float = 0.0) -> int:
    """The fewest of `per_gpu` slots whose memory (`device_mb` x `headroom` x slots / `per_gpu`) holds
    `peak_mb` plus the splits that training keeps on the device (`memory_share` of that memory);
    all of them when it fits in none or nothing was measured. Without splits this is
    ceil(peak_mb / (device_mb x headroom / per_gpu)), kept within 1..per_gpu."""
    if per_gpu <= 1 or peak_mb is None or not device_mb:
        return max(1, per_gpu)
    for slots in range(1, per_gpu):
        share = device_mb * headroom * slots / per_gpu
        if peak_mb + on_device_mb(splits_mb, memory_share * share) <= share:
            return slots
    return per_gpu


def memory_fraction(slots: int, settings: SlotSettings) -> float:
    """The share of its device's memory a job holding `slots` slots may use."""
    return slots / settings.per_gpu * settings.headroom


def probe_table(cells) -> tuple[dict[str, str], dict[str, dict]]:
    """{cell id: probe name} and {probe name: what it measures} of `cells` (Cell objects)."""
    names, specs = {}, {}
    for cell in cells:
        spec = probe_spec(cell)
        names[cell.id] = probe_name(spec)
        specs[names[cell.id]] = spec
    return names, specs


def cell_slots(cell: Cell, manifest: str | Path, settings: SlotSettings) -> int:
    """The slots a cell needs, from its probe and its prepared dataset (`manifest`; a shard file works too)."""
    if settings.per_gpu <= 1:
        return 1
    path = None if settings.probe_dir is None else paths.probe_file(settings.probe_dir, probe_name(probe_spec(cell)))
    probe = read_probe(path) if path is not None else None
    if probe is None or probe.get("peak_mb") is None:
        return settings.per_gpu
    return slots_needed(probe["peak_mb"], probe["device_mb"], settings.per_gpu, settings.headroom,
                        split_mb(manifest), cell.training.loader["memory_share"])
