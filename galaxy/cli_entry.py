"""The `galaxy` program's entry point. Importing the command line takes a moment (click, numpy,
astropy); Ctrl-C then ends it as Ctrl-C does later: one line and exit status 130, not a traceback."""

from __future__ import annotations

import signal
import sys

from galaxy.errors import Terminated  # small: no third-party import


def _terminated(signum, frame):
    raise Terminated()


def end_on_sigterm() -> None:
    """SIGTERM raises `Terminated` in the main thread from now on (Ctrl-C's path: the catalog is written)."""
    signal.signal(signal.SIGTERM, _terminated)


def main():
    """Run the `galaxy` command (`galaxy.cli.main`), importing it first. SIGTERM ends it as Ctrl-C
    does (`galaxy.errors.Terminated`): a batch system's cancel leaves a valid catalog, not only the journal."""
    end_on_sigterm()
    try:
        from galaxy.cli import main as run
    except KeyboardInterrupt as exc:
        print(f"interrupted ({interruption(exc)})", file=sys.stderr)
        sys.exit(exit_status(exc))
    run()


def interruption(exc: KeyboardInterrupt) -> str:
    """How a run was interrupted, as the messages say it: "SIGTERM" or "Ctrl-C"."""
    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"


def exit_status(exc: KeyboardInterrupt) -> int:
    """143 after SIGTERM, 130 after Ctrl-C (128 + the signal's number)."""
    return Terminated.exit_status if isinstance(exc, Terminated) else 130
