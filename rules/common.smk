# Config validation, the study's cells, and the input functions the rules use.
import json
import os
import shlex
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from workflow.datasets import DatasetConfigError, downloads, raw_dir, source_inputs
from workflow.jobenv import export_package_root
from workflow.outputs import CHART_FORMATS, HISTORY_FORMATS, TABLE_FORMATS, study_charts, study_tables
from workflow.study import ConfigError, build_study
from workflow.weights import imagenet_files

export_package_root(workflow.basedir)  # jobs run `python -m workflow`

validate(config, "../workflow/schemas/config.schema.yaml")
RAW = config["raw_dir"]
try:
    STUDY = build_study(config)
    DOWNLOADS = downloads(STUDY.datasets, RAW)
except (ConfigError, DatasetConfigError) as error:
    raise WorkflowError(f"Invalid study config: {error}")

OUT = str(STUDY.out)
DATA = str(STUDY.data_dir)
RES = config["resources"]
if RES["train_warning_s"] >= RES["train_runtime_min"] * 60:
    raise WorkflowError(
        f"Invalid study config: resources.train_warning_s ({RES['train_warning_s']}) must be less than "
        f"train_runtime_min ({RES['train_runtime_min']}) minutes, or 0 for no warning signal"
    )
# SLURM's warning before the time limit: SIGURG, which the job step's other process (Snakemake)
# ignores by default; SIGUSR1 would kill it (profiles/README.md).
TRAIN_SLURM_EXTRA = f"--signal=URG@{RES['train_warning_s']}" if RES["train_warning_s"] else ""
# {model: (cached file, URL)} of the ImageNet weights the cells start from (torch is imported only if any).
IMAGENET = imagenet_files(cell.model for cell in STUDY.cells.values() if cell.weights == "imagenet")
ENV = "../envs/tlsweep.yaml"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    resolution=r"\d+",
    cell=r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/r\d+/[A-Za-z0-9_.-]+",
    source=r"[a-z0-9_]+",
    filename=r"[^/]+",
    part=r"\d+",
    parts=r"\d+",


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
    return inputs


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
    spec = get_dataset(wildcards)
    if spec["source"] in ("digits", "imagefolder"):
        return ""
    return f"--raw-dir {shlex.quote(str(raw_dir(spec, RAW)))}"


def get_shards(wildcards):
    """A dataset's shard files at one resolution, in order."""
    parts = get_dataset(wildcards)["shards"]
    return [f"{DATA}/{wildcards.dataset}/r{wildcards.resolution}/shard-{i}-of-{parts}.h5" for i in range(parts)]


def grid_metrics():
    """metrics.json of every grid cell (upstream cells are pulled in by the DAG)."""
    return [str(STUDY.cell_dir(cell.id) / "metrics.json") for cell in STUDY.grid_cells]


def table_files():
    """Every table file the study gets (workflow.outputs.study_tables decides which)."""
    files = [f"{OUT}/tables/histories.{ext}" for ext in HISTORY_FORMATS]
    return files + [f"{OUT}/tables/{name}.{ext}" for name in study_tables(STUDY) for ext in TABLE_FORMATS]


def chart_files():
    """Every chart file the study gets (workflow.outputs.study_charts decides which)."""
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
