localrules:
    charts,


rule charts:
    """Draw the study's charts as offline HTML and PNG."""
    input:
        summary=f"{OUT}/summary.csv",
        histories=f"{OUT}/histories.csv",
    output:
        expand(f"{OUT}/charts/{{name}}.{{ext}}", name=["val_accuracy", "test_accuracy"], ext=["html", "png"]),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{OUT}/logs/charts.log",
    conda:
        ENV
    shell:
        "python -m workflow charts --summary {input.summary} --histories {input.histories}"
        " --out-dir {params.out_dir} > {log} 2>&1"
