"""The recommendation and the warnings in words: Markdown for the top of best.md and summary.md, HTML
for best.html, and a short HTML fragment that report/workflow.rst puts on the report's landing page.
Each leads with the cells that did not end ok, when there are any.
"""

from __future__ import annotations

import html
import re

import pandas as pd

from workflow.results.caveats import METRIC_WORDS, Caveat, CellStatuses
from workflow.results.stats import SELECTIONS

LANDING = '<template id="tlsweep-landing">'  # best.html carries the landing page's fragment in this element
LISTED = 6  # indistinguishable configurations named before "and N more"
LANDING_WARNINGS = 4  # warnings named on the landing page before "and N more"


def inline_html(text: str) -> str:
    """Text as HTML, its `code` spans as <code> (the report shows no literal backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def lead(statuses: CellStatuses, limit: int = LISTED) -> tuple[str, str, list[str]] | None:
    """The warning that opens every view when some cell did not end ok: (its bold words, the rest of its
    sentence, one line per cell that did not end ok: its id, status and first error line); None if all did."""
    if not statuses.failures:
        return None
    total = sum(statuses.counts.values())
    if statuses.counts["ok"] == 0:
        words, rest = ("Nothing to recommend: every cell failed",
                       f"(none of the {total} cells ended `ok`: {statuses.by_status()}). First errors:")
    else:
        words, rest = (f"Warning: {len(statuses.failures)} of {total} cells did not end ok",
                       f"({statuses.by_status()}): left out of every mean and the recommendation. First errors:")
    cells = [f"`{f.cell}`: {f.status}: {f.error or 'no error recorded'}" for f in statuses.failures[:limit]]
    if len(statuses.failures) > limit:
        cells.append(f"and {len(statuses.failures) - limit} more: the summary's `error` column has every one")
    return words, rest, cells


def lead_markdown(statuses: CellStatuses) -> str:
    """The lead warning as a Markdown quote ('' when every cell ended ok)."""
    found = lead(statuses)
    if found is None:
        return ""
    words, rest, cells = found
    return "\n".join([f"> **{words}** {rest}", *(f"> - {cell}" for cell in cells)]) + "\n\n"


def lead_html(statuses: CellStatuses, limit: int = LISTED) -> str:
    """The lead warning as HTML ('' when every cell ended ok)."""
    found = lead(statuses, limit)
    if found is None:
        return ""
    words, rest, cells = found
    return (f"<p class='warning'><strong>{html.escape(words)}</strong> {inline_html(rest)}</p>"
            f"<ul class='warning'>{''.join(f'<li>{inline_html(cell)}</li>' for cell in cells)}</ul>\n")


def _value(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.4f}"


def chosen_name(row: pd.Series) -> str:
    """The recommended configuration with its model: `resnet18, batch_size=16 optimizer=adam`."""
    config = row["config"]
    return config.replace(": ", ", ", 1) if config.startswith(f"{row['model']}: ") else f"{row['model']}, {config}"


def confirmation(row: pd.Series) -> str:
    """The chosen configuration's test metric with its interval and the test split's size."""
    interval = "" if pd.isna(row["test_low"]) else f", {row['interval']} [{_value(row['test_low'])}, {_value(row['test_high'])}]"
    size = "" if pd.isna(row["n_test"]) else f" on {int(row['n_test'])} test images"
    return f"{METRIC_WORDS[row['metric']]} {_value(row['mean'])}{interval}{size}"


def ties(row: pd.Series, limit: int = LISTED) -> str:
    """Which configurations the test images cannot tell from the winner."""
    if not row["runner_up"] or pd.isna(row["runner_up"]):
        return "the only configuration with a finished run"
    if pd.isna(row["n_indistinguishable"]):
        return "nothing could test the others against it (one seed, no predictions.npz)"
    names = [name for name in (row["indistinguishable"] or "").split("; ") if name]
    if not names:
        return "every other configuration that could be tested differs on test"
    shown = "; ".join(names[:limit]) + (f"; and {len(names) - limit} more" if len(names) > limit else "")
    return f"indistinguishable on test: {len(names)} other{'s' if len(names) > 1 else ''} ({shown})"


def sentence(row: pd.Series) -> str:
    """One recommendation: what was chosen (with its model, unless the line names the model already), on
    what, its confirmation and its ties."""
    words = SELECTIONS[row["selection"]][2]
    name = row["config"] if row["scope"] == "per model" else chosen_name(row)
    return f"{name}: {words} {_value(row['val_value'])}; {confirmation(row)}; {ties(row)}."


def selection_line(best: pd.DataFrame, selection: str | None) -> str:
    chosen = sorted(set(best["selection"])) or ["val_accuracy"]
    words = " and ".join(SELECTIONS[name][2] for name in chosen)
    return (f"Chosen on {words} (the study's `selection`: {selection or 'auto'}), mean over ok seeds; the test split "
            "only confirms the choice. Intervals are 95 %.")


def recommendation_markdown(best: pd.DataFrame, selection: str | None, caveats: list[Caveat] | None = None) -> str:
    """The recommendation per dataset (and per model) and, when given, the warnings, as Markdown."""
    lines = ["## Recommendation", "", selection_line(best, selection), ""]
    if best.empty:
        lines.append("No configuration has a finished (`ok`) run: nothing to recommend.")
    for dataset, rows in best.groupby("dataset", sort=True):
        overall = rows[rows["scope"] == "overall"]
        for _, row in overall.iterrows():
            lines.append(f"- **{dataset}**: {sentence(row)}")
        for _, row in rows[rows["scope"] == "per model"].iterrows():
            lines.append(f"  - best {row['model']}: {sentence(row)}")
    if caveats is not None:
        lines += ["", f"## Warnings ({len(caveats)})", ""]
        lines += [f"- **{c.kind}**, {c.where}: {c.message}" for c in caveats] or ["None."]
    return "\n".join(lines) + "\n\n"


def recommendation_html(best: pd.DataFrame, selection: str | None, caveats: list[Caveat] | None = None) -> str:
    """The same as recommendation_markdown, as HTML (for best.html and summary.html)."""
    esc = html.escape
    parts = ["<h3>Recommendation</h3>", f"<p>{inline_html(selection_line(best, selection))}</p>", "<ul>"]
    if best.empty:
        parts.append("<li>No configuration has a finished (<code>ok</code>) run: nothing to recommend.</li>")
    for dataset, rows in best.groupby("dataset", sort=True):
        for _, row in rows[rows["scope"] == "overall"].iterrows():
            parts.append(f"<li><strong>{esc(str(dataset))}</strong>: {inline_html(sentence(row))}")
        models = rows[rows["scope"] == "per model"]
        if len(models):
            parts.append("<ul>" + "".join(f"<li>best {esc(row['model'])}: {inline_html(sentence(row))}</li>"
                                          for _, row in models.iterrows()) + "</ul>")
        parts.append("</li>")
    parts.append("</ul>")
    if caveats is not None:
        parts.append(f"<h3>Warnings ({len(caveats)})</h3><ul class='warning'>")
        parts += [f"<li><strong>{esc(c.kind)}</strong>, {esc(c.where)}: {inline_html(c.message)}</li>" for c in caveats]
        parts.append("</ul>")
    return "\n".join(parts) + "\n"


def landing_html(best: pd.DataFrame, selection: str | None, caveats: list[Caveat], statuses: CellStatuses) -> str:
    """A short one-line HTML fragment for the report's landing page: the cells that did not end ok, per
    dataset the recommendation and its confirmation, then the warnings in a few words (the details are
    in the best table)."""
    esc = html.escape
    items = [f"<li><strong>{esc(str(row['dataset']))}</strong>: {inline_html(chosen_name(row))}; "
             f"{inline_html(confirmation(row))}; {inline_html(ties(row, limit=2))}.</li>"
             for _, row in best[best["scope"] == "overall"].iterrows()]
    chosen = " and ".join(SELECTIONS[name][2] for name in sorted(set(best["selection"]))) or "validation"
    text = [lead_html(statuses, limit=2), f"<p><strong>Recommendation</strong> (chosen on {esc(chosen)}, confirmed on test; per-model bests "
            "in the <em>best</em> table):</p>", f"<ul>{''.join(items) or '<li>nothing finished</li>'}</ul>"]
    if caveats:
        places = {}
        for caveat in caveats:
            places.setdefault(caveat.short, []).append(caveat.where)
        shorts = [f"{short} ({', '.join(dict.fromkeys(where))})" for short, where in places.items()]
        more = f"; and {len(shorts) - LANDING_WARNINGS} more" if len(shorts) > LANDING_WARNINGS else ""
        text.append(f"<p><strong>{len(caveats)} warning{'s' if len(caveats) > 1 else ''}</strong>: "
                    f"{esc('; '.join(shorts[:LANDING_WARNINGS]) + more)} (see the <em>best</em> table).</p>")
    return "".join(text).replace("\n", " ")


def best_preamble(best: pd.DataFrame, selection: str | None, caveats: list[Caveat],
                  statuses: CellStatuses) -> tuple[str, str]:
    """What goes above the best table: (Markdown, HTML), the HTML with the landing page's fragment."""
    landing = f"{LANDING}{landing_html(best, selection, caveats, statuses)}</template>\n"
    return (lead_markdown(statuses) + recommendation_markdown(best, selection, caveats) + "## Best configurations\n\n",
            landing + lead_html(statuses) + recommendation_html(best, selection, caveats)
            + "<h3>Best configurations</h3>\n")


def summary_preamble(best: pd.DataFrame, selection: str | None, caveats: list[Caveat],
                     statuses: CellStatuses) -> tuple[str, str]:
    """What goes above the summary table: the cells that did not end ok, the recommendation, and how many
    warnings best.md lists."""
    note = f"{len(caveats)} warning{'s' if len(caveats) != 1 else ''}: see the best table (best.md).\n\n" \
        if caveats else ""
    return (lead_markdown(statuses) + recommendation_markdown(best, selection) + note + "## Summary\n\n",
            lead_html(statuses) + recommendation_html(best, selection)
            + (f"<p>{html.escape(note.strip())}</p>" if note else "") + "<h3>Summary</h3>\n")
