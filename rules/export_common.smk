# The export rules' settings and input functions (rules/export.smk).
from workflow.export.plan import FILES as EXPORT_FILES, export_ids

EXPORT = {"enabled": True, "formats": ["torchscript", "onnx"], "cells": "best", **config.get("export", {})}
EXPORT_CELLS = export_ids(GRID_IDS)  # {export folder id: cell id}

def read_export_index():
    """The export index's entries by folder id, once the checkpoint rule has written it."""
    path = checkpoints.export_index.get().output[0]
    return {entry["id"]: entry for entry in read_json(path, os.stat(path).st_mtime_ns)["exports"]}


def export_folder_files(export_id):
    return [f"{OUT}/export/{export_id}/preprocess.json"] + [
        f"{OUT}/export/{export_id}/{EXPORT_FILES[fmt]}" for fmt in EXPORT["formats"]]


def export_targets(wildcards):
    """Every export folder's files that the index lists (an input function: the index comes first)."""
    return [file for export_id in read_export_index() for file in export_folder_files(export_id)]


def export_outputs():
    """What the exports add to the final targets: nothing with `export: {enabled: false}`."""
    return [export_targets] if EXPORT["enabled"] else []


def get_export_inputs(wildcards):
    """A cell's best checkpoint, once the index exists (not an input: rewriting the index re-exports
    only the cells whose `chosen` record changed, through the params)."""
    if wildcards.export_id not in EXPORT_CELLS:
        raise WorkflowError(f"{wildcards.export_id!r} is not the export folder of a grid cell of {STUDY.name!r}")
    read_export_index()  # waits for the index
    return {"checkpoint": str(STUDY.cell_dir(EXPORT_CELLS[wildcards.export_id]) / "best.pt")}


def get_chosen_json(wildcards):
    entry = read_export_index().get(wildcards.export_id)
    if entry is None:
        raise WorkflowError(f"cell {EXPORT_CELLS[wildcards.export_id]!r} is not in the export index")
    return json.dumps(entry["chosen"], sort_keys=True)
