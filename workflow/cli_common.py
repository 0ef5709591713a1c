"""What every command shares: the study file a job is given (`--configfile`) and resolving from it."""

from __future__ import annotations

import argparse
import sys


def log(message: str) -> None:
    print(message, flush=True)


def sweep_of(args):
    """The study a job is given (`--configfile`), as far as its search has decided; a bad study file exits
    with one line naming it and the key."""
    from workflow.sweep.decisions import load_sweep  # lazy: `download` and `predict` need no study

    try:
        return load_sweep(args.configfile)
    except ValueError as error:
        sys.exit(f"error: {error}")


def study_entry(getter, *key):
    """`getter(*key)` (a study's cell, dataset, ...), or exit with the one line saying it is not in the study."""
    try:
        return getter(*key)
    except ValueError as error:
        sys.exit(f"error: {error}")


def study_arg(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """--configfile: the study file a command works on."""
    p.add_argument("--configfile", required=default is None, default=default,
                   help="the study file: results/<study>/study.yaml in a job, or a study YAML such as "
                        "studies/digits-demo.yaml" + (f" (default: {default})" if default else ""))
