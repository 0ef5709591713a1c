"""Make this package importable by every job the workflow starts."""

from __future__ import annotations

import os


def export_package_root(root: str) -> None:
    """Prepend `root` to PYTHONPATH so that `python -m workflow` works in any job.

    Local jobs, conda environments and cluster jobs all inherit the environment
    of a Snakemake process that loaded the Snakefile, so this reaches them all.
    """
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
