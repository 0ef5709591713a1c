# The export rules' settings and input functions (rules/export.smk; workflow/export/index.py).
from workflow.export.index import export_ids, export_settings, read_export_index

EXPORT = export_settings(config)


def export_cells():
    """{export folder id: cell id} of the study's grid cells (a TPE search's as far as it has chosen)."""
    return SWEEP.derived("export_cells", lambda study: export_ids(study.grid_ids))


def export_index():
    """The export index's entries by folder id, once the checkpoint rule has written it."""
    return read_export_index(checkpoints.export_index.get().output[0])


def export_targets(wildcards):
    """Every export folder's files that the index lists (an input function: the index comes first)."""
    return [file for export_id in export_index() for file in paths.export_files(OUT, export_id, EXPORT["formats"])]


def get_export_inputs(wildcards):
    """A cell's best checkpoint, once the index exists (the index is not an input: rewriting it re-exports
    only the cells whose `chosen` record changed, through the params)."""
    cells = export_cells()
    if wildcards.export_id not in cells:
        raise WorkflowError(f"{wildcards.export_id!r} is not the export folder of a grid cell of {STUDY.name!r}")
    export_index()  # waits for the index
    return {"checkpoint": paths.cell_outputs(SWEEP.study.cell_dir(cells[wildcards.export_id]))["checkpoint"]}


def get_chosen_json(wildcards):
    entry = export_index().get(wildcards.export_id)
    if entry is None:
        raise WorkflowError(f"cell {export_cells()[wildcards.export_id]!r} is not in the export index")
    return json.dumps(entry["chosen"], sort_keys=True)
