"""tlsweep: transfer-learning sweeps. `snakemake --configfile studies/<name>.yaml` runs a study."""

import os
import sys

from snakemake.logging import logger
from snakemake.utils import min_version

min_version("9.0")


# The default study (next to this Snakefile); --configfile replaces it
# instead of being merged into it.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/features_common.smk"


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
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/halving.smk"
include: "rules/tpe.smk"
include: "rules/rank.smk"
include: "rules/aggregate.smk"
include: "rules/charts.smk"
include: "rules/export.smk"


rule all:
    default_target: True
    input:
        grid_cell_files,  # a deleted output of a cell redoes it (docs/training.md, damaged files)
        table_files(STUDY),
        chart_files(STUDY),
        export_targets if EXPORT["enabled"] else [],


# The end of a real run (never a dry run): the grid cells by state, the failed ones, the recommendation and
# where the tables are, on the console and in the log (docs/monitoring.md). A run after which grid cells
# ended but none trained to the end (all failed, diverged or oom) exits 1: sys.exit, since Snakemake 9
# exits 0 once onsuccess returns; SystemExit still passes through Snakemake's cleanup (its lock, its log
# file), which an exception here would print as a traceback instead.
onsuccess:
    from workflow.track.run_summary import run_summary

    summary = run_summary(SWEEP.study)
    mark_study_run(STUDY, config.get("tracking"), "FAILED" if summary.no_answer else "FINISHED")  # tracking.mlflow
    logger.info(summary.text)
    if summary.no_answer:
        logger.info(f"Complete log(s): {', '.join(map(os.path.abspath, log))}")
        sys.exit(1)


onerror:
    from workflow.track.run_summary import run_summary

    mark_study_run(STUDY, config.get("tracking"), "FAILED")  # the study's MLflow run (tracking.mlflow)
    logger.info(run_summary(SWEEP.study).text)  # Snakemake then exits 1 itself
