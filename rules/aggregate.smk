localrules:
    aggregate,


rule aggregate:
    """Collect every grid cell's metrics and history into the study's tables: the summary, the best
    configuration per dataset and model, and the papers' pivot tables the grid's axes allow."""
    input:
        metrics=grid_metrics,
        scores=score_files,  # `rank`: the candidate models' scores, the models table (rules/rank.smk)
    output:
        for_report(table_files(STUDY), "html", "tables"),
    params:
        study=get_study_file,
        config=json.dumps(config),  # not on the command line: a changed config re-runs the job (params trigger)
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        paths.log_file(OUT, "aggregate"),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow aggregate --configfile {params.study:q} --out-dir {params.out_dir:q} 3>&2 > {log:q} 2>&1"
