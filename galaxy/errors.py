"""The one exceptions module of galaxy.

User mistakes raise a subclass of `GalaxyError` whose message names the value and what was
expected. The CLI turns these into a one-line message and exit code 2 (usage) or 1 (other).
"""


class GalaxyError(Exception):
    """Base class for every error galaxy raises on purpose."""


class UsageError(GalaxyError):
    """A command was given a value it cannot use (bad option, missing file, wrong column)."""


class ImageReadError(GalaxyError):
    """One input image could not be read or preprocessed.

    Args:
        path: the file that failed.
        reason: why, in words a person understands.
        stage: where it failed: "read", "decode" or "preprocess".
    """

    def __init__(self, path, reason: str, stage: str = "read"):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.stage = stage


SHOWN = 6  # unreadable inputs a failure names (the first with its reason)


def unreadable(failed: list[ImageReadError]) -> ImageReadError:
    """One error for inputs that cannot be read: the first named with its reason, the others counted and
    the next few named, so that one run finds every bad file of a folder; `failed` kept as its `failed`."""
    others = ""
    if len(failed) > 1:
        named = ", ".join(str(exc.path) for exc in failed[1:SHOWN])
        others = f"; {len(failed) - 1} more unreadable: {named}{', ...' if len(failed) > SHOWN else ''}"
    error = ImageReadError(failed[0].path, f"{failed[0].reason}{others}")
    error.failed = failed
    return error


class ModelError(GalaxyError):
    """A model directory is missing a file, or its card does not match its weights."""


class BackendUnavailable(GalaxyError):
    """An optional inference backend (TensorRT, DALI, ...) is not installed or cannot run here.

    `lasting`: the cause stays on this machine whatever is freed or retried (a shipped int8 recipe that
    rebuilds into another model with this onnxruntime), so `auto` may record the backend as unable here;
    otherwise (a full or read-only cache) it is tried again on the next run."""

    lasting = False


class TrainingDiverged(GalaxyError):
    """Training cannot go on: the loss is no longer a finite number (the weights would be NaN)."""


class BackendError(GalaxyError):
    """An inference backend failed while running a batch."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's cancel or time limit: SLURM's scancel), raised in the main thread by
    the `galaxy` program as Ctrl-C is, so that the rows finished so far are written the same way.
    The program then exits with 143 (128 + 15), after Ctrl-C with 130."""

    exit_status = 143


def raise_terminated(signum, frame):
    """The SIGTERM handler of the `galaxy` program (`signal.signal(signal.SIGTERM, raise_terminated)`)."""
    raise Terminated()


def interruption(exc: KeyboardInterrupt) -> str:
    """How a run was interrupted, as the messages say it: "SIGTERM" or "Ctrl-C"."""
    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"


def exit_status(exc: KeyboardInterrupt) -> int:
    """143 after SIGTERM, 130 after Ctrl-C (128 + the signal's number)."""
    return Terminated.exit_status if isinstance(exc, Terminated) else 130


# Seconds an interrupted process may take to leave (its libraries' exit handlers, its threads) before it ends
# at once with its status.
INTERRUPT_GRACE = 30.0


def end_at_once_on_interrupt(status: int) -> None:
    """A process leaving with `status`, its work saved or its failure said: a Ctrl-C or SIGTERM while
    the libraries' exit handlers run ends it at once with that status (a second Ctrl-C had printed a
    traceback from DALI's pipeline shutdown, one at the end of a --ray run Ray's; nothing was left
    to save)."""
    import os
    import signal
    import sys

    def leave(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: nothing more can be said
                pass
        os._exit(status)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, leave)
    if status in (130, Terminated.exit_status):  # interrupted: the work is saved, but a worker thread stuck in a
        # read (a file that loops its reader, a hung network mount) would keep the process alive at exit, as
        # Python joins its threads: after INTERRUPT_GRACE seconds it ends anyway (one had run on, taking 8 GB)
        import threading

        timer = threading.Timer(INTERRUPT_GRACE, leave, (None, None))
        timer.daemon = True
        timer.start()
