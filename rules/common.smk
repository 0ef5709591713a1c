# Config validation, the study's cells, and the input functions the rules use.
import json
import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from workflow.jobenv import export_package_root
from workflow.outputs import CHART_FORMATS, HISTORY_FORMATS, TABLE_FORMATS, study_charts, study_tables
from workflow.study import ConfigError, build_study
from workflow.weights import imagenet_files

export_package_root(workflow.basedir)  # jobs run `python -m workflow`

validate(config, "../workflow/schemas/config.schema.yaml")
try:
    STUDY = build_study(config)
except ConfigError as error:
    raise WorkflowError(f"Invalid study config: {error}")

OUT = str(STUDY.out)
DATA = str(STUDY.data_dir)
RES = config["resources"]
# {model: (cached file, URL)} of the ImageNet weights the cells start from (torch is imported only if any).
IMAGENET = imagenet_files(cell.model for cell in STUDY.cells.values() if cell.weights == "imagenet")
ENV = "../envs/tlsweep.yaml"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    resolution=r"\d+",
    cell=r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/r\d+/[A-Za-z0-9_.-]+",


def get_cell(wildcards):
    """The study's cell for a `cell` wildcard, or an error naming it."""
    if wildcards.cell not in STUDY.cells:
        raise WorkflowError(f"{wildcards.cell!r} is not a cell of study {STUDY.name!r}")
    return STUDY.cells[wildcards.cell]


def get_train_inputs(wildcards):
    """A cell's prepared dataset, and its starting weights: the cached ImageNet file,
    its upstream cell's checkpoint or a weights file."""
    cell = get_cell(wildcards)
    inputs = {"shard": str(STUDY.shard_path(cell.dataset, cell.resolution))}
    if cell.weights == "imagenet":
        inputs["weights"] = IMAGENET[cell.model][0]
    elif cell.upstream:
        inputs["init"] = str(STUDY.cell_dir(cell.upstream) / "best.pt")
    elif cell.weights not in ("imagenet", "none"):
        inputs["init"] = cell.weights
    return inputs


def get_init_arg(wildcards, input):
    return f"--init {input.init}" if "init" in input.keys() else ""


def get_cell_json(wildcards):
    return json.dumps(get_cell(wildcards).to_dict(), sort_keys=True)


def get_dataset_json(wildcards):
    return json.dumps(STUDY.datasets[wildcards.dataset], sort_keys=True)


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
