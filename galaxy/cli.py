"""The `galaxy` command line: click options -> a frozen config -> a library function.

Here the group, its start-up (logging, the checks every command shares), `bench` and `main`; the
commands are in the galaxy.cli_* modules (classify, models, evaluate, train, framing) and registered
on the group below."""

from __future__ import annotations

import logging
import signal
import sys
import warnings

import click

from galaxy.errors import GalaxyError, end_at_once_on_interrupt, raise_terminated
from galaxy.version import __version__
from galaxy.progress import progress_interval
from galaxy.cli_common import GalaxyGroup as _Galaxy
from galaxy.cli_classify import classify
from galaxy.cli_evaluate import evaluate, montage_command, report_command
from galaxy.cli_framing import framing
from galaxy.cli_models import calibrate, check_backends, compile_engine, export, models, quantize
from galaxy.cli_train import distill, train
from galaxy.console import filter_native_stderr

log = logging.getLogger("galaxy")


def _not_astropy(record: logging.LogRecord) -> bool:
    return not (record.name == "astropy" or record.name.startswith("astropy."))


@click.group(cls=_Galaxy)
@click.version_option(__version__, prog_name="galaxy")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx, verbose):
    """Classify galaxy cutouts (JPEG, PNG, FITS) as spiral or elliptical."""
    before = set(logging.getLogger().handlers)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in set(logging.getLogger().handlers) - before:  # astropy's logger prints its records itself:
        handler.addFilter(_not_astropy)  # through this handler too, -v showed each FITS header note twice
    ctx.meta["galaxy.verbose"] = verbose
    try:  # a bad GALAXY_PROGRESS_INTERVAL is refused before a run makes its work folders
        progress_interval()
    except GalaxyError as exc:
        raise click.UsageError(str(exc)) from None
    encoding = sys.getfilesystemencoding()
    if encoding.replace("-", "").lower() != "utf8":  # file names are decoded in it: a catalog's paths and ids
        # would differ from a UTF-8 machine's (a rerun there classified the file again as a new one)
        log.warning("the locale's encoding is %s, not UTF-8: file names are read in it, so catalogs name non-ASCII "
                    "files otherwise than under a UTF-8 locale (run with LC_ALL=C.UTF-8 or PYTHONUTF8=1); catalogs are "
                    "written in UTF-8", encoding)
    # astropy's notes on each FITS header it repairs (3-4 lines a file): hidden, or with -v every one (Python's
    # default filter had shown each note once per code line, a number that changed with the threads' timing).
    # By module, so astropy is not imported for a JPEG run; what stops a file from being read still goes to the
    # errors file with its reason.
    warnings.filterwarnings("always" if verbose else "ignore", module=r"astropy\.io\.fits(\.|$)")


cli.add_command(train)
cli.add_command(distill)
cli.add_command(framing)
cli.add_command(export)
cli.add_command(classify)
cli.add_command(quantize)
cli.add_command(calibrate)
cli.add_command(compile_engine)
cli.add_command(check_backends)
cli.add_command(evaluate)
cli.add_command(montage_command)
cli.add_command(report_command)
cli.add_command(models)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def bench(ctx):
    """Throughput benchmark (the same as python bench.py; pass --help for its options).

    Example: galaxy bench --quick
    """
    from engine.benchmark import main as run_benchmark

    run_benchmark(ctx.args, prog="galaxy bench")


def main():
    """The `galaxy` program. Unless -v is given, native libraries' known chatter on stderr
    (per-file decoder errors already in the errors file, Ray's C++ log lines) is dropped."""
    signal.signal(signal.SIGTERM, raise_terminated)  # also for `python -m galaxy.cli`
    from engine.allocator import tune_allocator

    tune_allocator()  # freed image arrays kept in the process: the reference reader 2.5x faster
    verbose = any(arg in ("-v", "--verbose") for arg in sys.argv[1:2])
    restore = None if verbose else filter_native_stderr()
    try:
        cli(prog_name="galaxy")
    except SystemExit as exc:  # the work is saved or said: a Ctrl-C or SIGTERM while the libraries' exit
        # handlers run (DALI's, Ray's) ends the process at once, with its status
        end_at_once_on_interrupt(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)
        raise
    finally:
        if restore is not None:
            restore()


if __name__ == "__main__":
    main()
