"""`python -m workflow <command>`: see workflow/cli.py."""

import sys

from workflow.cli import run

if __name__ == "__main__":
    sys.exit(run())
