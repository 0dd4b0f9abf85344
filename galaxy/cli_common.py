"""What the click commands share: the group that remembers its argv, error mapping, common options."""

from __future__ import annotations

import errno
import logging
import math
import shlex
import sys

import click

from galaxy.config import MIN_CROP
from galaxy.errors import GalaxyError, UsageError, exit_status, interruption
from galaxy.votes import VoteRule


class GalaxyGroup(click.Group):
    """The command group; remembers the arguments it was given, for the records commands write."""

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["galaxy.argv"] = argv
        return ctx

    def invoke(self, ctx):
        """Run the command; Ctrl-C at any moment (also while a model loads) exits 130, as documented,
        instead of click's `Aborted!` and 1 (SIGTERM 143). Commands that have work to save catch it themselves."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            click.echo(f"interrupted ({interruption(exc)})", err=True)
            ctx.exit(exit_status(exc))
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)  # a write's error names no file
            if exc.strerror is None or (exc.filename is None and not full):
                raise
            # A file the system refused (an output in a folder that cannot be made, no permission, a full
            # disk): one line naming it, not a traceback; -v logs the traceback too.
            logging.getLogger("galaxy").debug("file error", exc_info=True)
            reason = exc.strerror
            if isinstance(exc, (FileExistsError, NotADirectoryError)):
                reason += " (a file stands where a folder is needed)"
            where = f"{exc.filename}: " if exc.filename is not None else ""
            if full:  # a rerun of classify continues; a training run goes on with --resume; others start over
                command = ctx.invoked_subcommand
                reason += (" (free space and rerun the same command: classify keeps the rows it committed)"
                           if command == "classify" else
                           " (free space and rerun the same command with --resume CHECKPOINTS/last.pt: it goes on "
                           "from the last epoch saved)" if command in ("train", "distill") else
                           " (free space and rerun the same command)")
            raise click.ClickException(f"{where}{reason}") from None


class ModelFolder(click.ParamType):
    """A model: a shipped model's name (see `galaxy models`) or a model folder."""

    name = "MODEL"

    def convert(self, value, param, ctx):
        from galaxy.card import model_path, shipped_models

        path = model_path(value)
        if not path.is_dir():
            self.fail(f"{value!r} is neither a model folder nor a shipped model ({', '.join(shipped_models())})",
                      param, ctx)
        if not (path / "card.json").is_file():  # one usage error whatever the command (`models` had exit 1)
            self.fail(f"{value!r} is a folder but not a model: it has no card.json", param, ctx)
        return str(path)


MODEL = ModelFolder()


class CropFraction(click.ParamType):
    """A centre crop fraction in (0, 1], or (where `auto` is allowed) "auto": measured from the inputs."""

    name = "FRACTION"

    def __init__(self, auto: bool):
        self.auto = auto

    def convert(self, value, param, ctx):
        if self.auto and str(value).lower() == "auto":
            return "auto"
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            fraction = None
        if fraction is None or not MIN_CROP <= fraction <= 1:
            self.fail(f"{value!r} is not a fraction in [{MIN_CROP}, 1]" + (' or "auto"' if self.auto else "")
                      + f" (below {MIN_CROP} a 423 px cutout leaves under 22 px to read)", param, ctx)
        return fraction


class Number(click.FloatRange):
    """A finite number within click's FloatRange bounds (which let nan and inf through: nan compares
    false with every bound)."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def only_what_to_act_on():
    """Log warnings and errors only (not with -v): `classify` prints one summary line, and `-q`
    on any command leaves nothing but what the user must act on."""
    if not click.get_current_context().meta.get("galaxy.verbose"):
        logging.getLogger().setLevel(logging.WARNING)


def command_line() -> str:
    """The command as typed (also when invoked in-process, e.g. by CliRunner)."""
    argv = click.get_current_context().meta.get("galaxy.argv", sys.argv[1:])
    return "galaxy " + shlex.join(argv)


def figure(value) -> str:
    """A card's or report's figure to 4 decimals; "n/a" where there is none (ROC AUC of more than two
    classes: absent; of one: null in strict JSON), as `galaxy evaluate` prints it."""
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def run_command(fn, *args):
    """Call a library function; turn galaxy's own errors into one clear line and an exit code."""
    try:
        return fn(*args)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    except GalaxyError as exc:
        raise click.ClickException(str(exc)) from None


def label_columns(command):
    """--label-column and --path-column: the columns of a labels CSV, for every command that reads labelled data
    (a folder of class folders or a vote table names neither)."""
    command = click.option("--path-column", default="file", show_default=True,
                           help="A labels CSV's column of image paths (relative ones from the CSV's folder).")(command)
    return click.option("--label-column", default="label", show_default=True,
                        help="A labels CSV's column of class names.")(command)


def vote_options(command=None, *, card_rule: bool = False):
    """The options that say how a Galaxy Zoo vote table becomes labels (`galaxy.votes`).

    With `card_rule` (evaluate) an option left out is None, not its default, so that `--split val`
    can tell an option given (even at its default value) from the model card's rule it would replace."""
    if command is None:
        return lambda command: vote_options(command, card_rule=card_rule)
    rule = VoteRule()
    default = {"vote_threshold": rule.threshold, "vote_kind": rule.kind, "min_votes": rule.min_votes}
    unset = ", or with --split val the card's rule" if card_rule else ""

    def given(name):
        return {"default": None, "show_default": f"{default[name]}{unset}"} if card_rule else {
            "default": default[name], "show_default": True}

    for option in reversed([
        click.option("--vote-threshold", type=Number(0.5, 1, min_open=True), **given("vote_threshold"),
                     help="Galaxy Zoo vote tables: the smooth or featured fraction that makes a clean label."),
        click.option("--vote-kind", type=click.Choice(["fraction", "debiased"]), **given("vote_kind")),
        click.option("--min-votes", type=click.IntRange(min=0), **given("min_votes"),
                     help="Vote tables: drop galaxies with fewer votes."),
        click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False),
                     help="Vote tables: the folder with the images (default: the table's folder)."),
    ]):
        command = option(command)
    return command
