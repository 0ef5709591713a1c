"""The story a run tells at its end (the Snakefile's `onsuccess` and `onerror`): its grid cells by state,
the failed ones with the first line of their error, the recommendation as best.md states it, and where
the tables and charts are. Read from the cells' files (`workflow.track.status`), like `status`."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workflow.core import paths
from workflow.track.status import status_table

FAILED_LISTED = 10  # failed cells named before "and N more"
WIDTH = 100  # the recommendation's lines are wrapped to this width
ORDER = ("ok", "failed", "diverged", "oom", "unstable", "pruned", "stopped", "running", "waiting")


@dataclass
class RunSummary:
    text: str
    no_answer: bool  # grid cells ended, none of them ok (a run --until manifest trained none: no verdict)


def cell_outcome(row: pd.Series, unstable: set[str]) -> str:
    """A cell's outcome: its metrics.json status once done (`unstable` as the summary table says), else its state."""
    if row["state"] != "done":
        return row["state"]
    return "unstable" if row["cell"] in unstable else (row["note"] or "ok")


def counts_line(outcomes: pd.Series) -> str:
    counts = outcomes.value_counts()
    shown = [state for state in ORDER if state in counts or state in ("ok", "failed")]
    return ", ".join(f"{int(counts.get(state, 0))} {state}" for state in shown)


def recommendation(out) -> list[str]:
    """The recommendation of best.md (its section's items: one per dataset), each in at most three
    wrapped lines; [] without a best table."""
    best = Path(paths.table_file(out, "best", "md"))
    if not best.exists():
        return []
    section = best.read_text().split("## Recommendation", 1)[-1].split("\n## ", 1)[0]
    items = [line[2:].replace("**", "") for line in section.splitlines() if line.startswith("- **")]
    if not items:
        return []
    return [f"Recommendation ({best}):"] + [textwrap.fill(item, WIDTH, initial_indent="  ", subsequent_indent="    ",
                                                          max_lines=3, placeholder=" ...") for item in items]


def run_summary(study) -> RunSummary:
    """What the console shows at the end of a run of `study`."""
    table = status_table(study)
    summary_csv = Path(paths.table_file(study.out, "summary", "csv"))
    try:  # the aggregate job's verdict; an older or damaged table only loses it
        summary = pd.read_csv(summary_csv, usecols=["cell", "status"])
        unstable = set(summary.loc[summary["status"] == "unstable", "cell"])
    except (OSError, ValueError):
        unstable = set()
    table["outcome"] = table.apply(cell_outcome, axis=1, unstable=unstable)
    grid = table[table["cell"].isin(study.grid_ids)]
    pretrain = table[~table["cell"].isin(study.grid_ids)]
    lines = [f"{study.name}: {len(grid)} grid cells: {counts_line(grid['outcome'])}"
             + (f" (pretrain cells: {counts_line(pretrain['outcome'])})" if len(pretrain) else "")]
    failed = table[table["outcome"] == "failed"]
    if len(failed):
        lines.append("Failed cells:")
        lines += [f"  {row.cell}: {(str(row.note).splitlines() or [''])[0][:200]}"
                  for row in failed.head(FAILED_LISTED).itertuples()]
        if len(failed) > FAILED_LISTED:
            lines.append(f"  and {len(failed) - FAILED_LISTED} more (python -m workflow status)")
    ended = grid[~grid["outcome"].isin(("waiting", "running", "stopped"))]
    no_answer = len(ended) > 0 and not (ended["outcome"] == "ok").any()  # an unstable cell's scores are no answer
    lines += recommendation(study.out)
    lines.append(f"Tables: {paths.tables_folder(study.out)}/  Charts: {paths.charts_folder(study.out)}/")
    if no_answer:
        unstable_count = int((ended["outcome"] == "unstable").sum())
        why = f"{unstable_count} unstable: their losses exploded; " if unstable_count else ""
        lines.append(f"error: no grid cell ended ok ({why}{study.name} has no result)")
    return RunSummary("\n".join(lines), no_answer)
