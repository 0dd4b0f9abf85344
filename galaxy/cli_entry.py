"""The `galaxy` program's entry point. Importing the command line takes a moment (click, numpy,
astropy); Ctrl-C then ends it as Ctrl-C does later: one line and exit status 130, not a traceback."""

from __future__ import annotations

import signal
import sys

from galaxy.errors import exit_status, interruption, raise_terminated  # small: no third-party import


def main():
    """Run the `galaxy` command (`galaxy.cli.main`), importing it first. SIGTERM ends it as Ctrl-C
    does (`galaxy.errors.Terminated`): a batch system's cancel leaves a valid catalog, not only the journal."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        from galaxy.cli import main as run
    except KeyboardInterrupt as exc:
        print(f"interrupted ({interruption(exc)})", file=sys.stderr)
        sys.exit(exit_status(exc))
    run()


if __name__ == "__main__":  # `python -m galaxy.cli_entry ...` ran nothing and exited 0
    main()
