# Config validation, the study, and the input functions the rules use. Every job is given the study file
# (--configfile results/<study>/study.yaml, the validated study, written when a run starts) and the key of
# what it works on (a cell id, a dataset, a probe, a rung, a round, an export id), and resolves its
# settings from them itself; the params below only make Snakemake re-run a job whose settings changed.
# Nothing here writes a file while Snakemake builds the DAG: a dry run writes none.
import json
import os
import shlex
import sys

from snakemake.exceptions import IncompleteCheckpointException, WorkflowError
from snakemake.logging import logger

sys.path.insert(0, workflow.basedir)

from workflow.data.datasets import DatasetConfigError, downloads, source_fingerprint, source_inputs
from workflow.gpu.slots import PROBE_NAME, cell_slots, probe_table, slot_settings
from workflow.integrity import DamagedFileError, check_cell_file, storage_message
from workflow.lock import lock_results
from workflow.core import paths
from workflow.study.grid import CELL_ID
from workflow.study.jobenv import export_package_root
from workflow.track.console import quiet_console, short_header
from workflow.study.study_file import write_study_file
from workflow.study.outputs import chart_files, table_files
from workflow.study.model_ranking import candidate_of, choice_path
from workflow.study.tpe_space import TpeSearch, round_inputs
from workflow.sweep.decisions import StudyError, load_checked_study
from workflow.sweep.halving import finish_inputs, previous_rung_inputs, rank_inputs
from workflow.track.study_run import mark_study_run
from workflow.train.weights import imagenet_files, uncached_note, weight_downloads

export_package_root(workflow.basedir)  # jobs run `python -m workflow`
short_header(logger)  # the header of a run or a dry run, whose `Command:` line holds the paths typed

try:  # checked as `python -m workflow cells` and `status` check it (config filled in with the defaults)
    SWEEP = load_checked_study(workflow.config_settings.configfiles, config)  # as far as its search has decided
except StudyError as error:
    raise WorkflowError(str(error))
STUDY = SWEEP.study  # its round-0 view: what the plan before the run needs (names, folders, tables)
DOWNLOADS = downloads(STUDY.datasets, config["raw_dir"])

RAW, OUT, DATA = config["raw_dir"], str(STUDY.out), str(STUDY.data_dir)
STUDY_FILE = paths.study_file(OUT)  # what every job reads its settings from (get_study_file)


onstart:
    try:
        lock_results(OUT)  # one run at a time on the study's results, from whichever working folder
        write_study_file(config, STUDY_FILE)  # before any job starts; never in a dry run (no onstart there)
    except OSError as error:  # a read-only or full results folder: one line naming it, before any job
        raise WorkflowError(storage_message(error, OUT) or str(error)) from None
    mark_study_run(STUDY, config.get("tracking"), "RUNNING")  # the MLflow store made once, before any job opens it
    quiet_console(logger)  # rule blocks and shell commands to the log file only; a dry run lists its jobs


HALVING = STUDY.halving  # successive halving's settings (rules/halving.smk), None for a grid search
TPE = STUDY.sampling if isinstance(STUDY.sampling, TpeSearch) else None  # rules/tpe.smk
RANKING = STUDY.ranking  # `rank`: candidate models scored from their features (rules/rank.smk), None without it
RES = config["resources"]
# Several cells per GPU (resources.slots_per_gpu = K > 1): each cell's memory probe, shared by studies.
SLOTS = slot_settings(RES, STUDY.results_dir)
SLOT_ARGS = f"--slots-per-gpu {SLOTS.per_gpu} --gpu-headroom {SLOTS.headroom}"
# SLURM's warning before the time limit: SIGURG, which Snakemake's job step ignores (profiles/README.md).
TRAIN_SLURM_EXTRA = f"--signal=URG@{RES['train_warning_s']}" if RES["train_warning_s"] else ""
# {model: (cached file, URL)} of the ImageNet weights the cells start from (torch is imported only if any).
IMAGENET = imagenet_files(cell.model for cell in [*STUDY.cells.values(), *STUDY.candidate_cells]
                          if cell.weights == "imagenet")  # rank-then-tune: every candidate's features too
ENV = "../envs/tlsweep.yaml"


def probes():
    """{cell id: probe name} and {probe name: what it measures} of the study's cells (resources.slots_per_gpu > 1)."""
    return SWEEP.derived("probes", lambda study: probe_table(study.cells.values()))


def get_study_file(wildcards, output):
    """The study file a job's `--configfile {params.study:q}` names. A params function of the output, which
    Snakemake does not record: a study's path never re-runs a job that studies share (a plan, a probe)."""
    return STUDY_FILE


def until_run():
    """Whether this run has `--until` (known once the DAG is built, not while the Snakefile is read): Snakemake
    (9.27) runs none of the jobs it plans again after a checkpoint then (snakemake/snakemake#2824), so a training
    job waits on no features tag and trains on the images (rules/features_common.smk)."""
    return bool(workflow.dag_settings and workflow.dag_settings.until)


def get_train_inputs(wildcards, pretrain):
    """A cell's manifest and starting weights and, with K > 1, its memory probe until measured: a checkpoint,
    so that turning slots on, or a new probe (another GPU or torch version), never re-runs a finished cell."""
    study = SWEEP.study
    cell = study.cell(wildcards.cell, pretrain)
    inputs = {**study.train_inputs(cell, IMAGENET), **get_features_inputs(cell)}  # rules/features.smk
    if cell.upstream:  # a damaged upstream best.pt stops the run (moved aside, not in a dry run: it trains again)
        try:
            check_cell_file(inputs["init"], move_aside=not workflow.dryrun)
        except DamagedFileError as error:
            raise WorkflowError(str(error))
    try:
        if SLOTS.probe_dir:
            checkpoints.probe_memory.get(combo=probes()[0][cell.id])
    except IncompleteCheckpointException as pending:
        return {**inputs, "probe": pending.targetfile}
    return inputs


def get_grid_inputs(wildcards):
    return get_train_inputs(wildcards, pretrain=False)


def get_upstream_inputs(wildcards):
    return get_train_inputs(wildcards, pretrain=True)


def get_gpu_slots(wildcards, input):
    """The `gpu_slots` a training job takes: 1 without slots, else what its probe and manifest say."""
    return cell_slots(SWEEP.study.cell(wildcards.cell), input.manifest, SLOTS)


def get_train_runtime(wildcards, attempt):
    """Minutes a training job may run: train_runtime_min, times the attempt unless train_runtime_grows is false."""
    return RES["train_runtime_min"] * (attempt if RES["train_runtime_grows"] else 1)


def get_init_arg(wildcards, input):
    return f"--init {shlex.quote(input.init)}" if "init" in input.keys() else ""


def get_cell_json(wildcards):
    """The cell's JSON: a params value, so that a cell whose settings changed trains again."""
    return SWEEP.study.cell(wildcards.cell).to_json()


def get_probe_json(wildcards):
    return json.dumps(probes()[1][wildcards.combo], sort_keys=True)


def get_download_args(wildcards, output):
    """--url and --md5 of a file to download, as the study's datasets give them."""
    dest = os.path.normpath(output[0])
    if dest not in DOWNLOADS:
        raise WorkflowError(f"no dataset of study {STUDY.name!r} downloads {dest}")
    remote = DOWNLOADS[dest]
    return f"--url {shlex.quote(remote.url)}" + (f" --md5 {remote.md5}" if remote.md5 else "")


def prepared_as(wildcards):
    """The first dataset of the study whose prepared data is the job's key (its files are the same for all)."""
    try:
        return STUDY.prepared_as(wildcards.data_key)
    except ValueError as error:
        raise WorkflowError(str(error))


def get_source_inputs(wildcards):
    """The files a dataset is prepared from: downloads in the raw folder, or its local copy."""
    name = prepared_as(wildcards)
    try:
        return [os.path.normpath(path) for path in source_inputs(name, STUDY.dataset(name), RAW)]
    except DatasetConfigError as error:
        raise WorkflowError(str(error))


def get_fingerprint_arg(wildcards):
    """The plan's --fingerprint: the digest of the user's files (names, sizes, mtimes) a dataset is read from, as
    its definition names them, a parameter of the plan job so that a change re-plans it."""
    name = prepared_as(wildcards)
    try:
        fingerprint = source_fingerprint(name, STUDY.definition_here(name)["spec"])
    except DatasetConfigError as error:
        raise WorkflowError(str(error))
    return f"--fingerprint {fingerprint}" if fingerprint else ""


def get_shards(wildcards):
    name = prepared_as(wildcards)
    return paths.dataset_shards(DATA, wildcards.data_key, wildcards.resolution, STUDY.dataset(name)["shards"])


# Successive halving (rules/halving.smk); a ranking is read once its checkpoint job is done. A halved
# TPE search halves each round on its own ladder: its rankings are per round ({round} in their paths).
RANKINGS = paths.round_rankings_folder(OUT, "{round}") if HALVING and TPE else paths.rankings_folder(OUT)


def read_ranking(rung, round_index=None):
    """A rung's ranking (of a TPE round's ladder, if given) once its checkpoint job is done."""
    ladder = {} if round_index is None else {"round": round_index}
    checkpoints.rank_rung.get(rung=rung, **ladder)
    return SWEEP.ranking(rung, round_index)


def get_rung_inputs(wildcards):
    return {**get_grid_inputs(wildcards), **previous_rung_inputs(SWEEP.study, wildcards.cell, int(wildcards.rung))}


def get_previous_arg(wildcards, input):
    return f"--previous {shlex.quote(os.path.dirname(input.state))}" if "state" in input.keys() else ""


def get_rank_inputs(wildcards):
    round_index = int(wildcards.round) if TPE else None
    if round_index:  # a later round's cells are known once its file is (round 0's before the run)
        read_round(round_index)
    return rank_inputs(SWEEP.study, int(wildcards.rung), lambda rung: read_ranking(rung, round_index), round_index)


def get_finish_inputs(wildcards):
    round_index = SWEEP.study.halving_round(wildcards.cell)
    return finish_inputs(SWEEP.study, wildcards.cell, lambda rung: read_ranking(rung, round_index))


# A TPE search (rules/tpe.smk): a round's cells join the study once its checkpoint job is done.
def read_round(round_index):
    checkpoints.tpe_round.get(round=round_index)
    SWEEP.know_round(round_index)


def get_tpe_round_inputs(wildcards):
    return round_inputs(SWEEP.study, int(wildcards.round), read_round)


def read_all_rounds():
    for round_index in range(1, TPE.rounds):
        read_round(round_index)


# Ranking candidate models from their features (rules/rank.smk); rank-then-tune's grid once its models are chosen.
def candidate_cell(wildcards):
    """The first grid cell (chosen or not) of the candidate a job scores, or an error naming it."""
    for cell in SWEEP.study.candidate_cells:
        if candidate_of(cell).id == wildcards.candidate:
            return cell
    raise WorkflowError(f"{wildcards.candidate!r} is not a candidate model of study {STUDY.name!r}")


def get_rank_model_inputs(wildcards):
    """The candidate's features file and its record (rules/features.smk)."""
    cell = candidate_cell(wildcards)
    h5, record = features_files(SWEEP.study, cell.dataset, cell.model, cell.resolution, cell.weights, cell.upstream)
    return {"features": h5, "record": record}


def get_scored_features_arg(wildcards, input):
    """--features of a scoring job (none in a dry run, while the pretrain cell's tag is pending)."""
    return f"--features {shlex.quote(input.features)}" if "features" in input.keys() else ""


def score_files(wildcards=None):
    """Every candidate's scores: inputs of the choice and of the models table."""
    return [paths.score_file(OUT, candidate.id) for candidate in RANKING.candidates] if RANKING else []


def read_model_choice():
    """Rank-then-tune: the study's grid once the choice checkpoint is done (a dry run stops at it)."""
    checkpoints.choose_models.get()
    SWEEP.know_choice()


def grid_outputs():
    """Every grid cell's outputs by name (upstream cells are pulled in by the DAG); a TPE search's once its
    rounds are chosen (rules/tpe.smk)."""
    if TPE:
        read_all_rounds()
    if RANKING and RANKING.keep:  # rank-then-tune: the chosen models' cells (rules/rank.smk)
        read_model_choice()
    study = SWEEP.study
    return [paths.cell_outputs(study.cell_dir(cell.id)) for cell in study.grid_cells]


def grid_metrics(wildcards=None):
    """metrics.json of every grid cell: what the tables are made from."""
    return [outputs["metrics"] for outputs in grid_outputs()]


def grid_cell_files(wildcards=None):
    """Every file of every grid cell, inputs of the `all` target (Snakemake re-runs a job whose output is missing
    only when a job that runs needs it), so that a deleted metrics.json or history.csv redoes its cell."""
    return [path for outputs in grid_outputs() for path in outputs.values()]


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
