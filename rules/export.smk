# Exporting the recommended models (`export` in the config, workflow/export/): once the tables exist,
# a checkpoint rule lists the cells to export (the best table's, or with `cells: all` every ok grid
# cell) in export/index.json; each gets a folder export/<id>/ (the cell id with `/` as `__`) holding
# TorchScript, ONNX and preprocess.json. The index is a checkpoint so that a dry run before the tables
# exist shows the plan, and the export jobs follow from the index once it is written.
from workflow.export.plan import FILES as EXPORT_FILES, export_ids

EXPORT = {"enabled": True, "formats": ["torchscript", "onnx"], "cells": "best", **config.get("export", {})}
EXPORT_CELLS = export_ids(GRID_IDS)  # {export folder id: cell id}

localrules:
    export_index,


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
    """The final targets the exports add to `rule all`: none with `export: {enabled: false}`."""
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


checkpoint export_index:
    """List the cells whose models are exported: each recommended configuration of the best table
    (its seed with the best selection value), or with `cells: all` every ok grid cell."""
    input:
        best=f"{OUT}/tables/best.parquet",
        summary=f"{OUT}/tables/summary.parquet",
    output:
        f"{OUT}/export/index.json",
    params:
        tables=f"{OUT}/tables",
        cells=EXPORT["cells"],
    log:
        f"{OUT}/logs/export_index.log",
    conda:
        ENV
    shell:
        "python -m workflow export-index --tables {params.tables} --cells {params.cells} --out {output}"
        " > {log} 2>&1"


rule export:
    """Export one cell's best checkpoint: TorchScript and ONNX (each checked against PyTorch's logits)
    and preprocess.json (input size, resize, normalisation, class names, what it was chosen on)."""
    input:
        unpack(get_export_inputs),
    output:
        [f"{OUT}/export/{{export_id}}/preprocess.json"]
        + [f"{OUT}/export/{{export_id}}/{EXPORT_FILES[fmt]}" for fmt in EXPORT["formats"]],
    params:
        chosen=get_chosen_json,
        formats=" ".join(EXPORT["formats"]),
        out=lambda wildcards: f"{OUT}/export/{wildcards.export_id}",
    wildcard_constraints:
        export_id=r"[A-Za-z0-9_.-]+",
    log:
        f"{OUT}/logs/export/{{export_id}}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python -m workflow export --model {input.checkpoint} --out {params.out} --formats {params.formats}"
        " --chosen {params.chosen:q} > {log} 2>&1"
