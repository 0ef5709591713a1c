# Config validation, the study's cells, and the input functions the rules use.
import json
import os
import shlex
import re
import sys
from functools import lru_cache

from snakemake.exceptions import IncompleteCheckpointException, WorkflowError

sys.path.insert(0, workflow.basedir)

from workflow.data.datasets import DatasetConfigError, downloads, source_inputs, source_raw_dir
from workflow.sweep.halving import CELL_FILES, stopping_rung, survivors
from workflow.study.jobenv import export_package_root
from workflow.study.outputs import CHART_FORMATS, HISTORY_FORMATS, TABLE_FORMATS, study_charts, study_tables
from workflow.gpu.slots import SlotSettings, cell_slots, export_settings, probe_key, probe_name, probe_spec
from workflow.study.config import ConfigError, check_config
from workflow.study.grid import build_study
from workflow.train.weights import imagenet_files

export_package_root(workflow.basedir)  # jobs run `python -m workflow`

try:
    check_config(config)
    STUDY = build_study(config)
    DOWNLOADS = downloads(STUDY.datasets, config["raw_dir"])
except (ConfigError, DatasetConfigError) as error:
    files = ", ".join(map(str, workflow.config_settings.configfiles)) or "config.yaml"
    raise WorkflowError(f"Invalid study config {files}: {error}")
RAW = config["raw_dir"]

GRID_IDS = [cell.id for cell in STUDY.grid_cells]
GRID_SET = set(GRID_IDS)
OUT = str(STUDY.out)
DATA = str(STUDY.data_dir)
HALVING = STUDY.halving  # successive halving's settings (rules/halving.smk), None for a grid search
RES = config["resources"]
# Several cells per GPU (resources.gpu_slots = K > 1, workflow/slots.py): each cell's memory probe is
# shared by studies under <results_dir>/probes/<torch version and GPU model>/; K, the headroom and that
# folder reach the training jobs through the environment (the train command line stays as it was).
# (No schema defaults for these two: every rule's --config JSON stays as it was for studies without them.)
SLOTS = SlotSettings(
    per_gpu=RES.get("gpu_slots", 1),
    headroom=RES.get("gpu_headroom", 0.9),
    probe_dir=STUDY.results_dir / "probes" / probe_key() if RES.get("gpu_slots", 1) > 1 else None,
)
export_settings(SLOTS)
# {cell id: probe name} and {probe name: what it measures}, with K > 1.
CELL_PROBES, PROBES = {}, {}
if SLOTS.probe_dir:
    for cell in STUDY.cells.values():
        spec = probe_spec(cell.to_dict())
        CELL_PROBES[cell.id] = probe_name(spec)
        PROBES[CELL_PROBES[cell.id]] = spec
# SLURM's warning before the time limit: SIGURG, which the job step's other process (Snakemake)
# ignores by default; SIGUSR1 would kill it (profiles/README.md).
TRAIN_SLURM_EXTRA = f"--signal=URG@{RES['train_warning_s']}" if RES["train_warning_s"] else ""
# {model: (cached file, URL)} of the ImageNet weights the cells start from (torch is imported only if any).
IMAGENET = imagenet_files(cell.model for cell in STUDY.cells.values() if cell.weights == "imagenet")
ENV = "../envs/tlsweep.yaml"


CELL = r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/r\d+/[A-Za-z0-9_.-]+"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    resolution=r"\d+",
    cell=CELL,
    rung=r"\d+",
    source=r"[a-z0-9_]+",
    filename=r"[^/]+",
    part=r"\d+",
    parts=r"\d+",


@lru_cache(maxsize=64)
def read_json(path, mtime_ns):
    """A JSON file's content, read once per version (`mtime_ns` is part of the cache key)."""
    with open(path) as f:
        return json.load(f)


def get_cell(wildcards):
    """The study's cell for a `cell` wildcard, or an error naming it."""
    if wildcards.cell not in STUDY.cells:
        raise WorkflowError(f"{wildcards.cell!r} is not a cell of study {STUDY.name!r}")
    return STUDY.cells[wildcards.cell]


def get_train_inputs(wildcards):
    """A cell's prepared dataset, and its starting weights: the cached ImageNet file,
    its upstream cell's checkpoint or a weights file."""
    cell = get_cell(wildcards)
    inputs = {"shard": str(STUDY.prepared_path(cell.dataset, cell.resolution))}
    if cell.weights == "imagenet":
        inputs["weights"] = IMAGENET[cell.model][0]
    elif cell.upstream:
        inputs["init"] = str(STUDY.cell_dir(cell.upstream) / "best.pt")
    elif cell.weights != "none":
        inputs["init"] = cell.weights
    if SLOTS.probe_dir:
        # Train only after the cell's memory probe. A checkpoint rather than a plain input: once the
        # probe exists the inputs are the same as without slots, so turning slots on, or a new probe
        # (another GPU or torch version), never re-runs a finished cell. While the probe is pending, the
        # cell's other inputs stay listed too, so that a dry run shows the whole plan.
        try:
            checkpoints.probe_memory.get(combo=CELL_PROBES[cell.id])
        except IncompleteCheckpointException as pending:
            inputs["probe"] = pending.targetfile
    return inputs


def get_gpu_slots(wildcards, input):
    """The `gpu_slots` a training job takes: 1 without slots; with K > 1 what workflow.gpu.slots.cell_slots
    makes of its probe and its manifest, read when the job is ready to run (<TBD> in a dry run while
    the manifest does not exist yet)."""
    if SLOTS.per_gpu == 1:
        return 1
    cell = get_cell(wildcards)
    return cell_slots(cell.to_dict(), STUDY.prepared_path(cell.dataset, cell.resolution), SLOTS)


def get_probe_json(wildcards):
    if wildcards.combo not in PROBES:
        raise WorkflowError(f"{wildcards.combo!r} is not a memory probe of study {STUDY.name!r}")
    return json.dumps(PROBES[wildcards.combo], sort_keys=True)


def trained_cells():
    """The `cell` wildcard of the train rule: every cell, but in a halving study only the upstream
    cells (grid cells then train rung by rung, rules/halving.smk)."""
    if HALVING is None:
        return CELL
    upstream = [cell_id for cell_id in STUDY.cells if cell_id not in GRID_SET]
    return "|".join(map(re.escape, upstream)) or "(?!)"  # (?!) matches nothing


def get_train_runtime(wildcards, attempt):
    """Minutes a training job may run: train_runtime_min, times the attempt unless train_runtime_grows is false."""
    return RES["train_runtime_min"] * (attempt if RES["train_runtime_grows"] else 1)


def get_init_arg(wildcards, input):
    return f"--init {input.init}" if "init" in input.keys() else ""


def get_cell_json(wildcards):
    return json.dumps(get_cell(wildcards).to_dict(), sort_keys=True)


def get_dataset(wildcards):
    """The resolved config entry of a `dataset` wildcard, or an error naming it."""
    if wildcards.dataset not in STUDY.datasets:
        raise WorkflowError(f"{wildcards.dataset!r} is not a dataset of study {STUDY.name!r}")
    return STUDY.datasets[wildcards.dataset]


def get_dataset_json(wildcards):
    return json.dumps(get_dataset(wildcards), sort_keys=True)


def get_download_args(wildcards, output):
    """--url and --md5 of a file to download, as the study's datasets give them."""
    dest = os.path.normpath(output[0])
    if dest not in DOWNLOADS:
        raise WorkflowError(f"no dataset of study {STUDY.name!r} downloads {dest}")
    remote = DOWNLOADS[dest]
    return f"--url {shlex.quote(remote.url)}" + (f" --md5 {remote.md5}" if remote.md5 else "")


def get_source_inputs(wildcards):
    """The files a dataset is prepared from: downloads in the raw folder, or its local copy."""
    try:
        return source_inputs(wildcards.dataset, get_dataset(wildcards), RAW)
    except DatasetConfigError as error:
        raise WorkflowError(str(error))


def get_raw_dir_arg(wildcards):
    folder = source_raw_dir(get_dataset(wildcards), RAW)
    return "" if folder is None else f"--raw-dir {shlex.quote(str(folder))}"


def get_shards(wildcards):
    """A dataset's shard files at one resolution, in order."""
    parts = get_dataset(wildcards)["shards"]
    return [f"{DATA}/{wildcards.dataset}/r{wildcards.resolution}/shard-{i}-of-{parts}.h5" for i in range(parts)]


# Successive halving (rules/halving.smk): its rules' input functions.
def rung_index(wildcards):
    """The `rung` wildcard as an index of the ladder, or an error naming it."""
    rung = int(wildcards.rung)
    if rung > HALVING.last:
        raise WorkflowError(f"rung {rung}: study {STUDY.name!r} has rungs 0 to {HALVING.last}")
    return rung


def get_halved_cell(wildcards):
    """The grid cell of a `cell` wildcard (upstream cells are never halved)."""
    cell = get_cell(wildcards)
    if cell.id not in GRID_SET:
        raise WorkflowError(f"{cell.id!r} is an upstream cell: only grid cells train by rungs")
    return cell


def get_rung_inputs(wildcards):
    """A rung's inputs: the cell's data and starting weights, and from rung 1 on its previous
    rung's state and best checkpoint (never a ranking)."""
    get_halved_cell(wildcards)
    inputs = get_train_inputs(wildcards)
    rung = rung_index(wildcards)
    if rung > 0:
        previous = STUDY.rung_dir(wildcards.cell, rung - 1)
        inputs.update(state=str(previous / "state.pt"), previous_best=str(previous / "best.pt"))
    return inputs


def get_previous_arg(wildcards):
    rung = rung_index(wildcards)
    return f"--previous {STUDY.rung_dir(wildcards.cell, rung - 1)}" if rung > 0 else ""


def ranking_file(rung):
    """The ranking of a rung, once its checkpoint job is done (else Snakemake waits for it)."""
    return checkpoints.rank_rung.get(rung=rung).output[0]


def read_ranking(rung):
    """The content of a rung's ranking (workflow.sweep.halving.rank_rung), once it is done."""
    path = ranking_file(rung)
    return read_json(path, os.stat(path).st_mtime_ns)


def get_rank_inputs(wildcards):
    """The rung's metrics and history of every cell that reached it: all grid cells at rung 0,
    afterwards the survivors of the previous ranking."""
    rung = rung_index(wildcards)
    if rung >= HALVING.last:
        raise WorkflowError(f"rung {rung} is the last: there is no ranking after it")
    cells = GRID_IDS if rung == 0 else survivors(read_ranking(rung - 1))
    return {
        name: [str(STUDY.rung_dir(cell_id, rung) / f"{name}.{ext}") for cell_id in cells]
        for name, ext in (("metrics", "json"), ("history", "csv"))
    }


def get_finish_inputs(wildcards):
    """The outputs of the rung where a cell stopped, and the rankings that decided it."""
    cell = get_halved_cell(wildcards)
    rankings = []
    for rung in range(HALVING.last):
        rankings.append(read_ranking(rung))
        if cell.id not in survivors(rankings[-1]):
            break
    rung_dir = STUDY.rung_dir(cell.id, stopping_rung(cell.id, rankings))
    return {"rankings": [ranking_file(k) for k in range(len(rankings))],
            **{name.split(".")[0]: str(rung_dir / name) for name in CELL_FILES}}


def halved_cells():
    """The `cell` wildcard of finish_cell: every cell but the upstream ones (which `train` makes)."""
    return rf"(?!(?:{trained_cells()})/){CELL}"


def grid_metrics():
    """metrics.json of every grid cell (upstream cells are pulled in by the DAG)."""
    return [str(STUDY.cell_dir(cell.id) / "metrics.json") for cell in STUDY.grid_cells]


def table_files():
    """Every table file the study gets (workflow.study.outputs.study_tables decides which)."""
    files = [f"{OUT}/tables/histories.{ext}" for ext in HISTORY_FORMATS]
    return files + [f"{OUT}/tables/{name}.{ext}" for name in study_tables(STUDY) for ext in TABLE_FORMATS]


def chart_files():
    """Every chart file the study gets (workflow.study.outputs.study_charts decides which)."""
    return [f"{OUT}/charts/{name}.{ext}" for name in study_charts(STUDY) for ext in CHART_FORMATS]


def for_report(files, ext, folder):
    """`files`, with those ending in .`ext` flagged for the report, captioned by report/<folder>/<name>.rst."""
    flagged = []
    for path in files:
        name, suffix = os.path.splitext(os.path.basename(path))
        if suffix == f".{ext}":
            path = report(path, caption=f"../report/{folder}/{name}.rst", category=folder.capitalize(),
                          labels={"name": name})
        flagged.append(path)
    return flagged


def final_outputs():
    """The final targets: the study's tables and charts."""
    return table_files() + chart_files()
