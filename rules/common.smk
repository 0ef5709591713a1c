# Config validation, the study, and the input functions the rules use.
import json
import os
import re
import shlex
import sys

from snakemake.exceptions import IncompleteCheckpointException, WorkflowError

sys.path.insert(0, workflow.basedir)

from workflow.data.datasets import DatasetConfigError, downloads, source_fingerprint, source_inputs, source_raw_dir
from workflow.export.weights_check import WeightsFileError, check_study_weights
from workflow.gpu.slots import PROBE_NAME, cell_slots, probe_table, slot_settings
from workflow.integrity import DamagedFileError, check_cell_file
from workflow.lock import lock_results
from workflow.core import paths
from workflow.study.config import ConfigError, check_config, check_config_files
from workflow.study.grid import CELL_ID, build_study
from workflow.study.jobfile import write_dataset_file, write_job_file, write_study_file
from workflow.study.jobenv import export_package_root
from workflow.study.outputs import chart_files, table_files
from workflow.study.tpe_space import TpeSearch, refresh, round_inputs
from workflow.sweep.halving import finish_inputs, load_ranking, previous_rung_inputs, rank_inputs
from workflow.train.weights import fetch_plan, imagenet_files

export_package_root(workflow.basedir)  # jobs run `python -m workflow`

try:
    check_config_files(workflow.config_settings.configfiles)  # a repeated key, naming both lines
    check_config(config)
    STUDY = build_study(config)
    check_study_weights(STUDY.cells.values())
    DOWNLOADS = downloads(STUDY.datasets, config["raw_dir"])
except (ConfigError, DatasetConfigError, WeightsFileError) as error:
    files = ", ".join(map(str, workflow.config_settings.configfiles)) or "config.yaml"
    raise WorkflowError(f"Invalid study config {files}: {error}")

RAW, OUT, DATA = config["raw_dir"], str(STUDY.out), str(STUDY.data_dir)


onstart:
    lock_results(OUT)  # one run at a time on the study's results, from whichever working folder


HALVING = STUDY.halving  # successive halving's settings (rules/halving.smk), None for a grid search
TPE = STUDY.sampling if isinstance(STUDY.sampling, TpeSearch) else None  # rules/search.smk
KNOWN_ROUNDS = set(TPE.written_rounds()) if TPE else set()  # the TPE rounds whose cells STUDY has
RES = config["resources"]
# Several cells per GPU (resources.gpu_slots = K > 1): each cell's memory probe, shared by studies.
SLOTS = slot_settings(RES, STUDY.results_dir)
CELL_PROBES, PROBES = probe_table(STUDY.cells.values()) if SLOTS.probe_dir else ({}, {})
SLOT_ARGS = f"--slots-per-gpu {SLOTS.per_gpu} --gpu-headroom {SLOTS.headroom}"
# SLURM's warning before the time limit: SIGURG, which Snakemake's job step ignores (profiles/README.md).
TRAIN_SLURM_EXTRA = f"--signal=URG@{RES['train_warning_s']}" if RES["train_warning_s"] else ""
# {model: (cached file, URL)} of the ImageNet weights the cells start from (torch is imported only if any).
IMAGENET = imagenet_files(cell.model for cell in STUDY.cells.values() if cell.weights == "imagenet")
ENV = "../envs/tlsweep.yaml"


def get_train_inputs(wildcards, folder):
    """A cell's manifest and starting weights and, with K > 1, its memory probe until measured: a checkpoint,
    so that turning slots on, or a new probe (another GPU or torch version), never re-runs a finished cell."""
    cell = STUDY.cell(wildcards.cell, folder)
    if cell.upstream:  # a damaged upstream best.pt stops the run (moved aside: that cell trains again)
        try:
            check_cell_file(STUDY.train_inputs(cell, IMAGENET)["init"])
        except DamagedFileError as error:
            raise WorkflowError(str(error))
    try:
        if SLOTS.probe_dir:
            checkpoints.probe_memory.get(combo=CELL_PROBES[cell.id])
    except IncompleteCheckpointException as pending:
        return {**STUDY.train_inputs(cell, IMAGENET), "probe": pending.targetfile}
    return STUDY.train_inputs(cell, IMAGENET)


def get_grid_inputs(wildcards):
    return get_train_inputs(wildcards, paths.GRID)


def get_upstream_inputs(wildcards):
    return get_train_inputs(wildcards, paths.UPSTREAM)


def get_gpu_slots(wildcards, input):
    """The `gpu_slots` a training job takes: 1 without slots, else what its probe and manifest say."""
    return cell_slots(STUDY.cell(wildcards.cell).to_dict(), input.manifest, SLOTS)


def get_train_runtime(wildcards, attempt):
    """Minutes a training job may run: train_runtime_min, times the attempt unless train_runtime_grows is false."""
    return RES["train_runtime_min"] * (attempt if RES["train_runtime_grows"] else 1)


def get_init_arg(wildcards, input):
    return f"--init {input.init}" if "init" in input.keys() else ""


def get_cell_json(wildcards):
    return json.dumps(STUDY.cell(wildcards.cell).to_dict(), sort_keys=True)


def get_cell_file(wildcards):
    """<cell folder>/cell.json: the resolved cell its training job reads (written when it changes)."""
    return write_job_file(STUDY, wildcards.cell, config.get("tracking"))


def get_study_file(wildcards):
    """<study folder>/config.yaml: the validated config the results jobs read (written when it changes)."""
    return write_study_file(STUDY, config)


def get_probe_json(wildcards):
    return json.dumps(PROBES[wildcards.combo], sort_keys=True)


def get_dataset_json(wildcards):
    return json.dumps(STUDY.dataset(wildcards.dataset), sort_keys=True)


def get_dataset_file(wildcards):
    """<data folder>/<dataset>/dataset.json: the dataset's resolved entry its plan job reads (written when it changes)."""
    return write_dataset_file(STUDY, wildcards.dataset)


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
        return source_inputs(wildcards.dataset, STUDY.dataset(wildcards.dataset), RAW)
    except DatasetConfigError as error:
        raise WorkflowError(str(error))


def get_source_args(wildcards):
    """The plan's --raw-dir, or --fingerprint: the digest of the user's files (names, sizes, mtimes) a dataset
    is read from, a parameter of the plan job, so that a change re-plans it."""
    spec = STUDY.dataset(wildcards.dataset)
    folder = source_raw_dir(spec, RAW)
    try:
        fingerprint = source_fingerprint(wildcards.dataset, spec)
    except DatasetConfigError as error:
        raise WorkflowError(str(error))
    return " ".join(([f"--raw-dir {shlex.quote(str(folder))}"] if folder else [])
                    + ([f"--fingerprint {fingerprint}"] if fingerprint else []))


def get_shards(wildcards):
    return paths.dataset_shards(DATA, wildcards.dataset, wildcards.resolution, STUDY.dataset(wildcards.dataset)["shards"])


# Successive halving (rules/halving.smk); a ranking is read once its checkpoint job is done. A halved
# TPE search halves each round on its own ladder: its rankings are per round ({round} in their paths).
RANKINGS = paths.round_rankings_folder(OUT, "{round}") if HALVING and TPE else paths.rankings_folder(OUT)


def read_ranking(rung, round_index=None):
    """A rung's ranking (of a TPE round's ladder, if given) once its checkpoint job is done."""
    ladder = {} if round_index is None else {"round": round_index}
    return load_ranking(checkpoints.rank_rung.get(rung=rung, **ladder).output[0])


def get_rung_inputs(wildcards):
    return {**get_grid_inputs(wildcards), **previous_rung_inputs(STUDY, wildcards.cell, int(wildcards.rung))}


def get_previous_arg(wildcards, input):
    return f"--previous {os.path.dirname(input.state)}" if "state" in input.keys() else ""


def get_rank_inputs(wildcards):
    round_index = int(wildcards.round) if TPE else None
    if round_index:  # a later round's cells are known once its file is (round 0's before the run)
        read_round(round_index)
    return rank_inputs(STUDY, int(wildcards.rung), lambda rung: read_ranking(rung, round_index), round_index)


def get_finish_inputs(wildcards):
    round_index = STUDY.halving_round(wildcards.cell)
    return finish_inputs(STUDY, wildcards.cell, lambda rung: read_ranking(rung, round_index))


def get_rankings_dir(wildcards):
    return str(STUDY.rankings_dir(STUDY.halving_round(wildcards.cell)))


# A TPE search (rules/search.smk): a round's cells join the study once its checkpoint job is done.
def read_round(round_index):
    checkpoints.tpe_round.get(round=round_index)
    if round_index not in KNOWN_ROUNDS:
        refresh(STUDY, build_study(config))
        KNOWN_ROUNDS.update(TPE.written_rounds())
        EXPORT_CELLS.update(export_ids(STUDY.grid_ids))  # rules/export_common.smk
        if SLOTS.probe_dir:  # the round's cells wait for their memory probes too
            names, specs = probe_table(STUDY.cells.values())
            CELL_PROBES.update(names)
            PROBES.update(specs)


def get_tpe_round_inputs(wildcards):
    return round_inputs(STUDY, int(wildcards.round), read_round)


def read_all_rounds():
    for round_index in range(1, TPE.rounds):
        read_round(round_index)


def grid_metrics(wildcards=None):
    """metrics.json of every grid cell (upstream cells are pulled in by the DAG); a TPE search's once its
    rounds are chosen (rules/search.smk)."""
    if TPE:
        read_all_rounds()
    return [paths.cell_outputs(STUDY.cell_dir(cell.id))["metrics"] for cell in STUDY.grid_cells]


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
