# Exporting the recommended models (`export` in the config, workflow/export/): once the tables exist,
# a checkpoint rule lists the cells to export (the best table's, or with `cells: all` every ok grid
# cell) in export/index.json; each gets a folder export/<id>/ (the cell id with `/` as `__`) holding
# TorchScript, ONNX and preprocess.json. The index is a checkpoint so that a dry run before the tables
# exist shows the plan, and the export jobs follow from the index once it is written.
include: "export_common.smk"


localrules:
    export_index,


checkpoint export_index:
    """List the cells whose models are exported: each recommended configuration of the best table
    (its seed with the best selection value), or with `cells: all` every ok grid cell."""
    input:
        best=paths.table_file(OUT, "best", "parquet"),
        summary=paths.table_file(OUT, "summary", "parquet"),
    output:
        paths.export_index_file(OUT),
    params:
        study=get_study_file,
        cells=EXPORT["cells"],  # not on the command line: a changed choice re-lists (params trigger)
    log:
        paths.log_file(OUT, "export_index"),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow export-index --configfile {params.study:q} --out {output:q}"
        " 3>&2 > {log:q} 2>&1"


rule export:
    """Export one cell's best checkpoint: TorchScript and ONNX (each checked against PyTorch's logits)
    and preprocess.json (input size, resize, normalisation, class names, what it was chosen on)."""
    input:
        unpack(get_export_inputs),
    output:
        paths.export_files(OUT, "{export_id}", EXPORT["formats"]),
    params:
        study=get_study_file,
        chosen=get_chosen_json,  # not on the command line (the job reads the index): a changed entry re-exports
        formats=EXPORT["formats"],  # likewise
    wildcard_constraints:
        export_id=r"[A-Za-z0-9_.-]+",
    log:
        paths.log_file(OUT, "export", "{export_id}"),
    threads: 1
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow export --configfile {params.study:q} --id {wildcards.export_id} 3>&2 > {log:q} 2>&1"
