localrules:
    aggregate,


rule aggregate:
    """Collect every grid cell's metrics and history into study-wide tables."""
    input:
        metrics=grid_metrics(),
    output:
        summary=f"{OUT}/summary.csv",
        histories=f"{OUT}/histories.csv",
    log:
        f"{OUT}/logs/aggregate.log",
    conda:
        ENV
    shell:
        "python -m workflow aggregate --metrics {input.metrics}"
        " --summary {output.summary} --histories {output.histories} > {log} 2>&1"
