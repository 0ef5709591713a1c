"""Where every result and data file of a study lives.

The rules call these functions with wildcards (``cell_folder(OUT, GRID, "{cell}")``) to get their
patterns, the package with values to find the files; so each path is spelled once, here. Every
function returns a string joined with ``/``.
"""

from __future__ import annotations

import hashlib
import json
import os

GRID = "cells"  # grid cells: <results_dir>/<study>/cells/<cell id>/
UPSTREAM = "upstream"  # pretrain cells: <results_dir>/<study>/upstream/<cell id>/ (the folder keeps its name)

METRICS_JSON = "metrics.json"
HISTORY_CSV = "history.csv"
BEST_PT = "best.pt"
STATE_PT = "state.pt"  # a rung's resumable checkpoint (successive halving)
LAST_PT = "last.pt"  # training's resumable checkpoint while a cell trains
BEST_SO_FAR_PT = "best-so-far.pt"  # training's best weights so far while a cell trains
PREDICTIONS_NPZ = "predictions.npz"  # the best weights' class scores on validation and test
EXPORT_FILES = {"torchscript": "torchscript.pt", "onnx": "model.onnx"}  # an export's file per format
PREPROCESS_JSON = "preprocess.json"  # an export's input size, resize, normalisation and class names
EXPORT_CHECKSUMS = "SHA256SUMS"  # the SHA-256 of an export's other files, written last
PROGRESS_JSON = "progress.json"  # how far a training job got, rewritten as it goes (`python -m workflow status`)
ATTEMPTS_LOG = "train.log"  # a training job's log, appended by every attempt
TENSORBOARD = "tensorboard"  # a cell's TensorBoard event files (tracking.tensorboard)
MLFLOW_DB = "mlflow.db"  # the default MLflow store, in the results folder (tracking.mlflow)
CELL_FILES = {"metrics": METRICS_JSON, "history": HISTORY_CSV, "checkpoint": BEST_PT}  # by output name


def study_folder(results_dir, study: str) -> str:
    """Everything a study writes: <results_dir>/<study>."""
    return f"{results_dir}/{study}"


def study_file(out) -> str:
    """The study file every job reads its settings from: the validated study, defaults filled in (the
    Snakefile writes it when a run starts)."""
    return f"{out}/study.yaml"


def cell_folder(out, folder: str, cell_id: str) -> str:
    """A cell's folder in the study folder `out`; `folder` is GRID or UPSTREAM."""
    return f"{out}/{folder}/{cell_id}"


def cell_outputs(cell_dir) -> dict[str, str]:
    """A cell's metrics, history and best checkpoint, by output name."""
    return {key: f"{cell_dir}/{name}" for key, name in CELL_FILES.items()}


def job_files(out_dir) -> dict[str, str]:
    """What a training job writes as it goes into its folder (a cell's, or a rung's): progress, the
    log of every attempt and the TensorBoard events; none is a Snakemake output."""
    return {"progress": f"{out_dir}/{PROGRESS_JSON}", "log": f"{out_dir}/{ATTEMPTS_LOG}",
            "tensorboard": f"{out_dir}/{TENSORBOARD}"}


def rung_name(rung) -> str:
    return f"rung-{rung}"


def rung_folder(cell_dir, rung) -> str:
    """A grid cell's folder for one rung (successive halving), in its cell folder."""
    return f"{cell_dir}/{rung_name(rung)}"


def rung_outputs(rung_dir) -> dict[str, str]:
    """A rung's outputs: a cell's, and its state to continue from, by output name."""
    return {**cell_outputs(rung_dir), "state": f"{rung_dir}/{STATE_PT}"}


def rankings_folder(out) -> str:
    """The rankings of a halving study's rungs."""
    return f"{out}/halving"


def round_rankings_folder(out, round_index) -> str:
    """The rankings of one TPE round's ladder (a halved TPE search halves each round on its own)."""
    return f"{rankings_folder(out)}/round-{round_index}"


def ranking_file(rankings_dir, rung) -> str:
    """The ranking of the cells that reached a rung, in the rankings folder."""
    return f"{rankings_dir}/{rung_name(rung)}.json"


def model_ranking_folder(out) -> str:
    """A study's candidate models ranked from their features (study key `rank`): scores and choices."""
    return f"{out}/rank"


def score_file(out, candidate: str) -> str:
    """One candidate's scores (LogME, the linear probe) from its features: <out>/rank/<candidate id>.json."""
    return f"{model_ranking_folder(out)}/{candidate}.json"


def model_choice_file(out, name: str) -> str:
    """The models rank-then-tune chose (`name` says by what, how many, of which candidates)."""
    return f"{model_ranking_folder(out)}/{name}.json"


def log_file(root, *parts) -> str:
    """A job's log: <root>/logs/<part>/.../<last part>.log (root: a study, data or raw folder)."""
    return "/".join([str(root), "logs", *map(str, parts)]) + ".log"


def benchmark_file(root, *parts) -> str:
    """A job's benchmark record: <root>/benchmarks/<part>/.../<last part>.tsv."""
    return "/".join([str(root), "benchmarks", *map(str, parts)]) + ".tsv"


def cell_log(out, cell_id: str) -> str:
    """The training log of a cell trained in one job (rule train)."""
    return log_file(out, "train", cell_id)


def upstream_log(out, cell_id: str) -> str:
    """The training log of a pretrain cell (rule train_upstream)."""
    return log_file(out, "train_upstream", cell_id)


def rung_log(out, cell_id: str, rung) -> str:
    """The training log of a grid cell's rung (rule train_rung)."""
    return log_file(out, "train", rung_folder(cell_id, rung))


def tables_folder(out) -> str:
    return f"{out}/tables"


def table_file(out, name: str, ext: str) -> str:
    return f"{tables_folder(out)}/{name}.{ext}"


def charts_folder(out) -> str:
    return f"{out}/charts"


def chart_file(out, name: str, ext: str) -> str:
    return f"{charts_folder(out)}/{name}.{ext}"


DATA_KEY = r"[a-z0-9_]+-[0-9a-f]{12}"  # a data key as a regular expression (`data_key`)


def data_key(source: str, definition: dict) -> str:
    """The name of a dataset's prepared data under the data folder: its source and the first 12 hex digits of
    the SHA-256 of its definition's canonical JSON (workflow.study.grid.data_definition). No dataset name is in
    it, so the same definition under two names, or in two studies, is prepared once."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return f"{source}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def seen_from_data(location, data_dir) -> str:
    """A user's file or folder as a definition records it: absolute as given, else relative to the data folder
    (so that a project moved with its data keeps its keys, and `imgs` of two working folders differ)."""
    if os.path.isabs(location):
        return os.path.normpath(location)
    return os.path.relpath(os.path.abspath(location), os.path.abspath(data_dir))


def from_data(location, data_dir) -> str:
    """A location recorded by `seen_from_data`, usable from the working folder again."""
    return os.path.normpath(os.path.join(data_dir, location))


def data_folder(data_dir, key: str) -> str:
    """Everything prepared from one definition: <data_dir>/<key>."""
    return f"{data_dir}/{key}"


def plan_file(data_dir, key: str) -> str:
    """The plan of a definition: its checked source files and every kept image's split."""
    return f"{data_folder(data_dir, key)}/plan.json"


def definition_file(data_dir, key: str) -> str:
    """The definition the key digests, written beside the plan for people to read."""
    return f"{data_folder(data_dir, key)}/definition.json"


def shard_key(key: str, resolution, part, parts) -> str:
    """A shard's name under the data folder (and under the shard rule's logs)."""
    return f"{key}/r{resolution}/shard-{part}-of-{parts}"


def shard_file(data_dir, key: str, resolution, part, parts) -> str:
    """Shard `part` of `parts` of prepared data at a resolution (HDF5)."""
    return f"{data_dir}/{shard_key(key, resolution, part, parts)}.h5"


def dataset_shards(data_dir, key: str, resolution, parts: int) -> list[str]:
    """Every shard of prepared data at a resolution, in order."""
    return [shard_file(data_dir, key, resolution, part, parts) for part in range(parts)]


def manifest_key(key: str, resolution) -> str:
    """A manifest's name under the data folder (and under the manifest rule's logs)."""
    return f"{key}/r{resolution}"


def manifest_file(data_dir, key: str, resolution) -> str:
    """The manifest of prepared data at a resolution: its shards, counts and checksums; what training reads."""
    return f"{data_dir}/{manifest_key(key, resolution)}.json"


POOLED = "pooled"  # the features' pooling of the named heads: the backbone's own pooled features


def features_name(weights_tag: str, pooling: str = POOLED) -> str:
    """A features file's name without `.h5`: the weights tag, and `-<pooling>` (`gap`, `gmp`, `flatten`: a head
    of layers' first layer, `workflow.train.head_input.features_pooling`) unless it holds the pooled features."""
    return weights_tag if pooling == POOLED else f"{weights_tag}-{pooling}"


def features_file(data_dir, key: str, model: str, resolution, weights_tag: str, pooling: str = POOLED) -> str:
    """A backbone's output as the new head's first layer reads it (`pooling`: the pooled features, or what a
    head of layers pools) of prepared data at a resolution, from the starting weights `weights_tag` names
    (`features_weights_tag`): HDF5, shared by every cell and study that needs them."""
    return (f"{data_folder(data_dir, key)}/features/{model.replace(':', '-', 1)}/r{resolution}/"
            f"{features_name(weights_tag, pooling)}.h5")


def features_record(features_h5) -> str:
    """The record beside a features file (its SHA-256, counts, dim, how long it took), written last: the
    features are complete when it exists."""
    return str(features_h5).removesuffix(".h5") + ".json"


def features_weights_tag(model: str, weights: str, init_sha256: str | None = None) -> str:
    """A file-name-safe tag of a backbone's starting weights: `imagenet` (torchvision's), `timm-<tag>` (a timm
    model's pretrained tag, `default` when its name gives none), `none`, or `pretrain-`/`file-` and the first
    12 hex digits of the SHA-256 of the checkpoint it starts from (`init_sha256`)."""
    if weights == "none":
        return "none"
    if weights == "imagenet":
        if not model.startswith("timm:"):
            return "imagenet"
        name = model[len("timm:"):]
        return f"timm-{name.split('.', 1)[1] if '.' in name else 'default'}"
    if not init_sha256:
        raise ValueError(f"weights {weights!r}: the features' tag needs the SHA-256 of the checkpoint")
    kind = "pretrain" if weights.startswith("pretrain:") else "file"
    return f"{kind}-{init_sha256[:12]}"


def pretrain_tag_file(out, cell_id: str) -> str:
    """The features' weights tag of a pretrain cell's best.pt (its SHA-256), in the study folder `out`."""
    return f"{out}/features/{cell_id}.json"


def probes_folder(results_dir, key: str) -> str:
    """The memory probes of one torch version and GPU model, shared by every study of `results_dir`."""
    return f"{results_dir}/probes/{key}"


def probe_file(probes_dir, name: str) -> str:
    """The record of one probed combination."""
    return f"{probes_dir}/{name}.json"


def raw_file(raw_root, source: str, filename: str) -> str:
    """A downloaded source file in the raw folder."""
    return f"{raw_root}/{source}/{filename}"


def export_index_file(out) -> str:
    """The list of the cells a study exports (the export_index checkpoint's output)."""
    return f"{out}/export/index.json"


def export_folder(out, export_id: str) -> str:
    return f"{out}/export/{export_id}"


def export_files(out, export_id: str, formats) -> list[str]:
    """An export folder's files: preprocess.json, one model file per format and their SHA256SUMS."""
    folder = export_folder(out, export_id)
    return ([f"{folder}/{PREPROCESS_JSON}"] + [f"{folder}/{EXPORT_FILES[fmt]}" for fmt in formats]
            + [f"{folder}/{EXPORT_CHECKSUMS}"])


def search_folder(out) -> str:
    """A TPE search's files (search.method tpe): its rounds and Optuna's journal."""
    return f"{out}/search"


def round_file(search_dir, round_index) -> str:
    """The configurations Optuna chose for one round of a TPE search, in the search folder."""
    return f"{search_dir}/round-{round_index}.json"


def journal_file(search_dir) -> str:
    """Optuna's journal (JournalFileBackend) of a TPE search, in the search folder."""
    return f"{search_dir}/optuna-journal.log"
