"""What `python -m workflow aggregate` does: collect a study's cells, rank and compare their
configurations, write every planned table (the recommendation above the summary, the recommendation
and the warnings above the best table) and log the recommendation and the warnings.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from workflow.results.aggregate import DAMAGED, collect_cells
from workflow.results.caveats import caveats, summary_statuses
from workflow.results.models_table import MODEL_TABLES, models_preamble, models_table
from workflow.results.recommend import best_preamble, recommendation_markdown, summary_preamble
from workflow.results.search_charts import search_table_names, search_tables
from workflow.results.stats import best_table, configurations
from workflow.results.tables import finalists, tables_from, write_histories, write_table
from workflow.core import paths
from workflow.study.grid import Study
from workflow.study.outputs import study_tables


def aggregate_study(study: Study, out_dir: str | Path | None = None, selection: str | None = None,
                    log=print) -> dict[str, pd.DataFrame]:
    """Write the study's planned tables and histories into `out_dir` (default <study>/tables), ranking
    on `selection` (the study's setting; None: auto), and log the recommendation and every warning."""
    out_dir = Path(out_dir) if out_dir else paths.tables_folder(study.out)
    summary, histories, outcomes = collect_cells(study)  # every predictions.npz read once
    write_histories(histories, out_dir)
    configs = configurations(finalists(summary), selection, outcomes)
    names = [name for name in study_tables(study) if name not in (*search_table_names(study), *MODEL_TABLES)]
    tables = tables_from(names, summary, configs, histories,
                         study.halving.rungs if study.halving else ())
    tables.update(search_tables(study, summary))  # a sampled search's (workflow.results.search_charts)
    if study.ranking is not None:  # `rank`: the candidate models scored from their features
        tables["models"] = models_table(study, summary)
    best = tables["best"] if "best" in tables else best_table(configs)
    found = caveats(tables.get("summary", summary), configs, best, selection)
    statuses = summary_statuses(summary)
    preambles = {"summary": summary_preamble(best, selection, found, statuses),
                 "best": best_preamble(best, selection, found, statuses)}
    if "models" in tables:
        preambles["models"] = models_preamble(tables["models"])
    for name, table in tables.items():
        write_table(table, out_dir, name, preamble=preambles.get(name))
    log(summary[["cell", "status", "test_accuracy", "error"]].to_string(index=False))
    if statuses.failures:
        log(f"warning: {'nothing to recommend: every cell failed' if not statuses.counts['ok'] else 'some cells failed'}"
            f": {statuses.headline()}")
    log("\n" + recommendation_markdown(best, selection).strip())
    for caveat in found:
        log(f"warning: {caveat.line()}")
    for error in summary.loc[summary["status"] == DAMAGED, "error"]:
        log(f"warning: {error}")
    log(f"\nwrote {', '.join(tables)} and histories to {out_dir}")
    return tables
