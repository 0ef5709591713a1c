"""Snakemake's console, short: the rule blocks, shell commands and "Finished jobid" lines of a run stay
in its log file (.snakemake/log/*.snakemake.log) and out of the terminal, and no terminal line is longer
than LONGEST characters. `--quiet rules` would drop them from the log file too (Snakemake 9 gives its
console and its log file the same filter), so this filters Snakemake's console handler alone."""

from __future__ import annotations

import logging

LONGEST = 300  # characters of a console line; a longer one is cut, ending in "..."
HIDDEN = {"job_info", "shellcmd", "job_finished"}  # Snakemake's LogEvent values kept out of the console
CONSOLE_HANDLER = "DefaultStreamHandler"  # the name Snakemake 9 gives its console's logging handler


def short(line: str) -> str:
    return line if len(line) <= LONGEST else line[:LONGEST - 3] + "..."


class ShortConsole(logging.Formatter):
    """Snakemake's console formatter with every line cut to LONGEST characters; with `events`, only the
    lines of those records (the rest as Snakemake wrote them)."""

    def __init__(self, inner: logging.Formatter, events: frozenset[str] | None = None):
        super().__init__()
        self.inner, self.events = inner, events

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        if self.events is not None and str(getattr(record, "event", "")) not in self.events:
            return text
        return "\n".join(short(line) for line in text.split("\n"))


def shown(record: logging.LogRecord) -> bool:
    """Whether the console shows the record (the rest is left to the log file)."""
    return str(getattr(record, "event", "")) not in HIDDEN


def console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [handler for handler in logger.handlers if handler.name == CONSOLE_HANDLER]


def short_header(logger: logging.Logger) -> None:
    """Cut the lines of the header Snakemake prints when a run or a dry run starts (its `Command:` line
    holds every path the user typed). Called while the Snakefile is read, before that header."""
    for handler in console_handlers(logger):
        if not isinstance(handler.formatter, ShortConsole):
            handler.setFormatter(ShortConsole(handler.formatter, frozenset({"workflow_started"})))


def quiet_console(logger: logging.Logger) -> None:
    """Filter the console handler of Snakemake's `logger` (its log file keeps everything) and cut all
    its lines. Called when a run starts (onstart), so that a dry run still lists its jobs whole."""
    for handler in console_handlers(logger):
        formatter = handler.formatter
        if isinstance(formatter, ShortConsole) and formatter.events is None:
            continue
        handler.addFilter(shown)
        handler.setFormatter(ShortConsole(formatter.inner if isinstance(formatter, ShortConsole) else formatter))
