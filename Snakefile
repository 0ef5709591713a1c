"""tlsweep: transfer-learning sweeps. `snakemake --configfile studies/<name>.yaml` runs a study."""

from snakemake.utils import min_version

min_version("9.0")


# The default study (next to this Snakefile); --configfile replaces it
# instead of being merged into it.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    data_key=paths.DATA_KEY,
    resolution=r"\d+",
    cell=CELL_ID,
    rung=r"\d+",
    round=r"\d+",
    source=r"[a-z0-9_]+",
    filename=r"[^/]+",
    part=r"\d+",
    parts=r"\d+",


include: "rules/download.smk"
include: "rules/prepare.smk"
include: "rules/weights.smk"
include: "rules/probe.smk"
include: "rules/train.smk"
include: "rules/halving.smk"
include: "rules/tpe.smk"
include: "rules/aggregate.smk"
include: "rules/charts.smk"
include: "rules/export.smk"


onsuccess:
    mark_study_run(STUDY, config.get("tracking"), "FINISHED")  # the study's MLflow run (tracking.mlflow)


onerror:
    mark_study_run(STUDY, config.get("tracking"), "FAILED")


rule all:
    default_target: True
    input:
        grid_cell_files,  # a deleted output of a cell redoes it (docs/training.md, damaged files)
        table_files(STUDY),
        chart_files(STUDY),
        export_targets if EXPORT["enabled"] else [],
