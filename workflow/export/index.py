"""The export index: which cells a study exports, and the folder each goes to (export/index.json).

The `best` table's rows are configurations (a cell without its seed), per dataset `overall` and,
where the dataset has several models, `per model`. A configuration's export is the cell among its
ok seeds with the best value of the selection metric it was chosen on (ties: the first in the
summary's order); a cell recommended in both scopes is exported once. With `cells: all` every ok
grid cell is exported, the recommended ones with what they were chosen on. The index (index.json)
lists each export's folder id, cell and `chosen` record (None for a cell not recommended).
Torch-free: the Snakefile asks `export_id` for the folder names when the config loads.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

from workflow.atomic import write_json
from workflow.core import paths

CELLS = ("best", "all")
FILES = paths.EXPORT_FILES
DEFAULTS = {"enabled": True, "formats": ["torchscript", "onnx"], "cells": "best"}


def export_settings(config: dict) -> dict:
    """The study's `export` settings with their defaults (kept out of the config, so that studies
    without the key keep the same aggregate jobs)."""
    return {**DEFAULTS, **config.get("export", {})}


@lru_cache(maxsize=8)
def _read_index(path: str, mtime_ns: int) -> dict:
    again = "write it again (snakemake --configfile <study> --forcerun export_index)"
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {again}") from None
    exports = index.get("exports") if isinstance(index, dict) else None
    if not isinstance(exports, list):
        raise ValueError(f"{path}: exports is missing or not a list; {again}")
    for number, entry in enumerate(exports):
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("cell"), str)):
            raise ValueError(f"{path}: exports[{number}] has no id or no cell; {again}")
    return {entry["id"]: entry for entry in exports}


def read_export_index(path: str | Path) -> dict[str, dict]:
    """The export index's entries by folder id, read once per version of the file; a damaged index is a
    ValueError naming it and the key."""
    return _read_index(str(path), os.stat(path).st_mtime_ns)


def export_id(cell_id: str) -> str:
    """The export folder of a cell: its id with `/` made `__` (ids hold only [A-Za-z0-9_.-] and `/`)."""
    return cell_id.replace("/", "__")


def export_ids(cell_ids) -> dict[str, str]:
    """{export folder id: cell id} of `cell_ids`; ValueError when two cells would share a folder."""
    table = {}
    for cell_id in cell_ids:
        folder = export_id(cell_id)
        if folder in table and table[folder] != cell_id:
            raise ValueError(f"cells {table[folder]!r} and {cell_id!r} would both export to {folder!r}")
        table[folder] = cell_id
    return table


def plain(value):
    """A table value as JSON: NaN and NA as None, NumPy scalars as Python ones."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    try:
        if value != value or (isinstance(value, float) and math.isinf(value)):
            return None
    except TypeError:  # pandas.NA
        return None
    return value


def config_columns(best) -> list[str]:
    """The best table's columns that make a configuration: dataset, model and its axes."""
    columns = list(best.columns)
    return ["dataset", "model", *columns[columns.index("config") + 1:columns.index("selection")]]


def best_seed(row, keys: list[str], summary) -> tuple[str, float | None]:
    """The ok cell of a best row's configuration (its values on `keys`) with the best selection
    value: (cell id, value)."""
    import pandas as pd  # pandas and the results code only here: `predict` imports this module for FILES

    from workflow.results.stats import SELECTIONS
    from workflow.results.tables import finalists

    runs = finalists(summary)
    runs = runs[runs["status"] == "ok"]
    match = pd.Series(True, index=runs.index)
    for key in keys:
        match &= runs[key].isna() if pd.isna(row[key]) else runs[key] == row[key]
    runs = runs[match]
    if runs.empty:
        raise ValueError(f"no ok cell of configuration {row['config']!r} ({row['dataset']}, {row['model']}) "
                         f"in the summary")
    column, higher = SELECTIONS[row["selection"]][:2]
    values = runs[column].astype(float) * (-1.0 if higher else 1.0)
    chosen = values.fillna(math.inf).idxmin() if values.notna().any() else runs.index[0]
    return runs.loc[chosen, "cell"], plain(runs.loc[chosen, column])


def chosen_record(row, cell_value) -> dict:
    """What a recommended configuration was chosen on, and its test metric with its interval."""
    return {
        "recommended_as": [{"scope": row["scope"], "config": row["config"]}],
        "dataset": row["dataset"], "model": row["model"],
        "selection": {"metric": row["selection"], "configuration_mean": plain(row["val_value"]),
                      "cell_value": cell_value, "ok_seeds": plain(row["n_ok"])},
        "test": {"metric": row["metric"], "mean": plain(row["mean"]), "low": plain(row["test_low"]),
                 "high": plain(row["test_high"]), "interval": plain(row["interval"]), "n_test": plain(row["n_test"])},
        "note": "the test metric is that of the configuration (its mean over ok seeds); this export is its seed "
                "with the best selection value",
    }


def export_entries(best, summary, cells: str = "best") -> list[dict]:
    """The export index's entries of a study from its `best` and `summary` tables: [{"id", "cell", "chosen"}], the
    recommended cells first (overall before per model, in the table's order), then with `cells`
    `all` the other ok grid cells in the summary's order."""
    if cells not in CELLS:
        raise ValueError(f"export.cells: {cells!r}; choose one of {list(CELLS)}")
    entries: dict[str, dict] = {}
    keys = config_columns(best)
    for _, row in best.sort_values("scope", key=lambda s: s != "overall", kind="stable").iterrows():
        cell, value = best_seed(row, keys, summary)
        if cell in entries:
            entries[cell]["chosen"]["recommended_as"].append({"scope": row["scope"], "config": row["config"]})
        else:
            entries[cell] = {"cell": cell, "chosen": chosen_record(row, value)}
    if cells == "all":
        for cell in summary.loc[summary["status"] == "ok", "cell"]:
            entries.setdefault(cell, {"cell": cell, "chosen": None})
    ids = export_ids(entries)
    by_cell = {cell: folder for folder, cell in ids.items()}
    return [{"id": by_cell[cell], **entry} for cell, entry in entries.items()]


def write_export_index(tables_dir: str | Path, out: str | Path, cells: str = "best") -> list[dict]:
    """Read the study's best and summary tables (parquet) from `tables_dir` and write the index."""
    import pandas as pd

    tables_dir = Path(tables_dir)
    entries = export_entries(pd.read_parquet(tables_dir / "best.parquet"),
                             pd.read_parquet(tables_dir / "summary.parquet"), cells)
    write_json(out, {"cells": cells, "exports": entries})
    return entries
