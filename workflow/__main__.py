"""`python -m workflow <command>`: see workflow/cli.py."""

import sys

from workflow.cli import main

sys.exit(main())
