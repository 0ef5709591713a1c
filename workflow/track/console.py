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
    """Snakemake's console formatter with every line cut to LONGEST characters."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(short(line) for line in self.inner.format(record).split("\n"))


def shown(record: logging.LogRecord) -> bool:
    """Whether the console shows the record (the rest is left to the log file)."""
    return str(getattr(record, "event", "")) not in HIDDEN


def quiet_console(logger: logging.Logger) -> None:
    """Filter the console handler of Snakemake's `logger` (its log file keeps everything). Called when a
    run starts (onstart), so that a dry run still lists its jobs."""
    for handler in logger.handlers:
        if handler.name == CONSOLE_HANDLER and not isinstance(handler.formatter, ShortConsole):
            handler.addFilter(shown)
            handler.setFormatter(ShortConsole(handler.formatter))
