"""Which tables and charts a study gets, decided from its grid before anything runs.

Snakemake must know every output file before the run, so `rules/common.smk`
asks here; the commands that write the files ask the same functions, so the
planned and the written files always agree. A table or chart is planned only
when the grid varies the axes it compares, so none comes out empty.
"""

from __future__ import annotations

import json
import math

from workflow.core import paths
from workflow.study.grid import AXES, Study

TABLE_FORMATS = ("csv", "md", "parquet", "html")
HISTORY_FORMATS = ("csv", "parquet")
CHART_FORMATS = ("html", "png", "svg")

# The axes a sweep varies (a study of sub-grids, e.g. a learning-rate sweep and a batch-size sweep):
# datasets and seeds are what a sweep is repeated over, not what it compares.
SWEEP_AXES = ("model", "resolution", "optimizer", "batch_size", "lr", "train", "weights")

LAST_PREFIX = "last:"
FROM_PREFIX = "from:"
KERAS_PREFIX = "keras:"


def trainable_layers(train: str) -> int | None:
    """Layers a `train` value trains: `last:N` N (the head's included), `keras:N` N (Keras layers, the
    head aside), `head` 0; None otherwise."""
    if train == "head":
        return 0
    for prefix in (LAST_PREFIX, KERAS_PREFIX):
        if train.startswith(prefix):
            return int(train[len(prefix):])
    return None


def regime(weights: str, train: str) -> str:
    """The training regime of the DenseNet study: from scratch, frozen, fine-tuned, the last N layers,
    or from a named module on."""
    if weights == "none":
        return "from scratch"
    if train == "head":
        return "frozen"
    if train == "all":
        return "fine-tuned"
    if train.startswith(FROM_PREFIX):
        return f"from {train[len(FROM_PREFIX):]}"
    if train.startswith(KERAS_PREFIX):
        return f"last {trainable_layers(train)} Keras layers"
    return f"last {trainable_layers(train)} layers"


def planned_cells(study: Study) -> list:
    """The grid cells the outputs are planned from: rank-then-tune's every candidate model's, so that the plan
    is the same before and after the models are chosen."""
    return study.candidate_cells or study.grid_cells


def grid_values(study: Study, axis: str) -> set:
    """The distinct values an axis takes over the study's grid cells (a TPE search's drawn axis: the
    values it may take, since its later rounds are chosen during the run)."""
    planned = study.sampling.planned_values(axis) if study.sampling is not None else None
    return planned if planned is not None else {getattr(cell, axis) for cell in planned_cells(study)}


def _varies(study: Study, *axes: str) -> bool:
    return all(len(grid_values(study, axis)) > 1 for axis in axes)


def sweep_groups(records: list[dict], axis: str) -> list[list[int]]:
    """The sweeps along `axis`: groups of records (by index, in order) equal on every other key but the
    seed, each with more than one value of `axis`. A record is a cell's values on its axes (a summary row's)."""
    groups: dict[tuple, list[int]] = {}
    for index, record in enumerate(records):
        key = tuple(sorted((name, repr(value)) for name, value in record.items() if name not in (axis, "seed")))
        groups.setdefault(key, []).append(index)
    return [members for members in groups.values() if len({repr(records[i][axis]) for i in members}) > 1]


def swept_axes(records: list[dict]) -> list[str]:
    """The axes a study of sub-grids sweeps, one at a time (its `sweeps` table): none when the records are
    every combination of the values that vary (a product: the pivot tables and heatmaps show it), or
    when they sweep fewer than two axes."""
    varying = [name for name in records[0] if len({repr(record[name]) for record in records}) > 1]
    combinations = {tuple(repr(record[name]) for name in varying) for record in records}
    if len(combinations) == math.prod(len({repr(record[name]) for record in records}) for name in varying):
        return []
    axes = [axis for axis in SWEEP_AXES if axis in records[0] and sweep_groups(records, axis)]
    return axes if len(axes) > 1 else []


def cell_records(study: Study) -> list[dict]:
    """Each grid cell's values on its axes, swept `training` keys included (the summary's axis columns)."""
    extras = sorted({key for cell in study.grid_cells for key in cell.params})

    def value(cell, key):
        own = getattr(cell.training, key)
        return own if isinstance(own, (str, int, float, bool)) else json.dumps(own, sort_keys=True)
    return [{**{axis: getattr(cell, axis) for axis in AXES}, **{key: value(cell, key) for key in extras}}
            for cell in study.grid_cells]


def study_tables(study: Study) -> list[str]:
    """The study's tables besides `histories`, by name."""
    tables = ["summary", "best"]
    if _varies(study, "seed"):
        tables.append("configs")
    if _varies(study, "batch_size"):
        tables.append("batch_size")
    if _varies(study, "batch_size", "lr"):
        tables.append("batch_lr")
    if len({regime(cell.weights, cell.train) for cell in planned_cells(study)}) > 1:
        tables.append("regimes")
    if study.sampling is None and swept_axes(cell_records(study)):  # a search's draws are no sub-grids
        tables.append("sweeps")
    if study.halving is not None:
        tables.append("halving")
    if study.sampling is not None:  # workflow.results.search_charts
        tables.append("importance")
    if study.ranking is not None:  # workflow.results.models_table
        tables.append("models")
    return tables


def study_charts(study: Study) -> list[str]:
    """The study's charts, by name."""
    charts = []
    if _varies(study, "batch_size"):
        charts.append("val_accuracy")
    if _varies(study, "batch_size") or _varies(study, "optimizer"):
        charts.append("test_accuracy")
    if _varies(study, "optimizer"):
        charts.append("train_curves")
    if _varies(study, "batch_size", "lr"):
        charts.append("lr_batch_heatmap")
    layers = {trainable_layers(cell.train) for cell in planned_cells(study)} - {None}
    if len(layers) > 1:
        charts.append("trainable_layers")
    if len(planned_cells(study)) > 1:
        charts.append("accuracy_vs_time")
    if len({regime(cell.weights, cell.train) for cell in planned_cells(study)}) > 1:
        charts.append("regime_curves")
    if _varies(study, "seed"):
        charts.append("configs")
    if study.halving is not None:
        charts.append("halving")
    if study.sampling is not None:  # workflow.results.search_charts
        charts.append("search")
    if study.ranking is not None:  # workflow.results.model_charts
        charts.append("models")
    return charts


def table_files(study: Study) -> list[str]:
    """Every table file the study gets: the histories and each table of `study_tables` in every format."""
    files = [paths.table_file(study.out, "histories", ext) for ext in HISTORY_FORMATS]
    return files + [paths.table_file(study.out, name, ext) for name in study_tables(study) for ext in TABLE_FORMATS]


def chart_files(study: Study) -> list[str]:
    """Every chart file the study gets: each chart of `study_charts` in every format."""
    return [paths.chart_file(study.out, name, ext) for name in study_charts(study) for ext in CHART_FORMATS]
