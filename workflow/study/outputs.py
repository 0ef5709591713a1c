"""Which tables and charts a study gets, decided from its grid before anything runs.

Snakemake must know every output file before the run, so `rules/common.smk`
asks here; the commands that write the files ask the same functions, so the
planned and the written files always agree. A table or chart is planned only
when the grid varies the axes it compares, so none comes out empty.
"""

from __future__ import annotations

from workflow.core import paths
from workflow.study.grid import Study

TABLE_FORMATS = ("csv", "md", "parquet", "html")
HISTORY_FORMATS = ("csv", "parquet")
CHART_FORMATS = ("html", "png", "svg")

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
