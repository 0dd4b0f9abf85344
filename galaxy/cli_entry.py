"""The `galaxy` program's entry point. Importing the command line takes a moment (click, numpy,
astropy); Ctrl-C then ends it as Ctrl-C does later: one line and exit status 130, not a traceback."""

from __future__ import annotations

import sys


def main():
    """Run the `galaxy` command (`galaxy.cli.main`), importing it first."""
    try:
        from galaxy.cli import main as run
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    run()
