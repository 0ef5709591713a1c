localrules:
    charts,


rule charts:
    """Draw the charts the study's axes allow, each as offline HTML, PNG and SVG."""
    input:
        summary=paths.table_file(OUT, "summary", "parquet"),
        histories=paths.table_file(OUT, "histories", "parquet"),
    output:
        for_report(chart_files(STUDY), "svg", "charts"),
    params:
        study=get_study_file,
        config=json.dumps(config),  # not on the command line: a changed config re-runs the job (params trigger)
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        paths.log_file(OUT, "charts"),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow charts --configfile {params.study:q} --summary {input.summary:q}"
        " --histories {input.histories:q} --out-dir {params.out_dir:q} 3>&2 > {log:q} 2>&1"
