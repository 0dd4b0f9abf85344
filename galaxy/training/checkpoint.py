"""A training run's checkpoint (`WORK_DIR/last.pt`): what `--resume` may change, the checks that a
checkpoint belongs to the command resuming it, and restoring the run from it, so that a resumed run
ends where the run would have ended without the stop; and what a resumed run records of its parts
(the options a resume changed, the arithmetic each part ran on)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from galaxy.card import shipped_models
from galaxy.config import TrainConfig, config_dict
from galaxy.errors import UsageError

log = logging.getLogger(__name__)

# Options a resumed run may change: where things go and how fast they run, not what is learned; and
# --epochs / --patience, to train on for longer (the learning-rate schedule then stretches to the new
# end, so only a resume with the same options ends as the run would have without the stop).
RESUMABLE_CHANGES = frozenset({"out_dir", "work_dir", "name", "progress", "workers", "resume", "command", "export",
                               "calibrate", "epochs", "patience"})


# Options naming files or folders: `./labels.csv` and `labels.csv` are the same data.
PATH_OPTIONS = ("data", "images_dir", "init", "teachers", "teacher_targets", "unlabeled")
INIT_NAMES = ("scratch", "imagenet", "default")  # what --init names without a path


def comparable_paths(options: dict, base: str | None = None) -> dict:
    """A recorded config with its paths made absolute (from `base`, the folder the run was started in;
    default the current one) and normalised."""
    base = base or os.getcwd()

    def resolved(value: str) -> str:  # a name (`--init default`, `--teacher sdss-xception`) stays a name
        path = os.path.normpath(os.path.join(base, value))
        named = value in INIT_NAMES or (value in shipped_models() and not os.path.exists(path))  # as model_path
        return value if named else path

    out = dict(options)
    for key in PATH_OPTIONS:
        value = out.get(key)
        if isinstance(value, (list, tuple)):
            out[key] = [resolved(v) for v in value]
        elif isinstance(value, str):
            out[key] = resolved(value)
    return out


def changed_options(then: dict, now: dict, then_base: str | None = None) -> list[str]:
    """The training options (not those a resume may change) that differ between two recorded configs;
    `then_base`: the folder the first was given in (its relative paths are from there)."""
    then, now = comparable_paths(then, then_base), comparable_paths(now)
    return sorted(k for k in set(then) | set(now) if k not in RESUMABLE_CHANGES and then.get(k) != now.get(k))


def check_resume(config, checkpoint, out_dir: Path) -> None:
    """Before any image is read: refuse a checkpoint of other options, naming each, and an -o that
    holds a model this run did not write (a teacher's folder was overwritten by its student).

    Raises:
        UsageError: either.
    """
    then, began_in = checkpoint.get("config", {}), checkpoint.get("cwd")  # its paths are from where it began
    changed = changed_options(then, config_dict(config), began_in)
    if then.get("teacher_targets") and config.teacher_targets:  # a file of the same targets under another name
        # (the copy the run kept beside its model, once the first is gone): its contents are checked against the
        # checkpoint's targets before any image is read (`prepare_data`: "learned from other soft targets")
        changed = [name for name in changed if name != "teacher_targets"]
    if then and changed:
        was, now = comparable_paths(then, began_in), comparable_paths(config_dict(config))
        raise UsageError(f"checkpoint {config.resume} was written by a run with other options: "
                         + "; ".join(f"{k}: {was.get(k)!r} then, {now.get(k)!r} now" for k in changed)
                         + " (resume with the command that wrote it)")
    if config.epochs < checkpoint["epoch"]:  # the card would say N epochs over a model trained for more
        raise UsageError(f"--epochs {config.epochs}: checkpoint {config.resume} has trained {checkpoint['epoch']} "
                         f"epochs already; give --epochs {checkpoint['epoch']} or more")
    if (out_dir / "card.json").is_file():
        try:
            training = json.loads((out_dir / "card.json").read_text()).get("training", {})
        except (OSError, ValueError):
            training = {}
        held = training.get("config", {})
        if not held or not then or changed_options(held, comparable_paths(then, began_in), training.get("cwd")):
            raise UsageError(f"{out_dir} already holds a model that this run did not write (its card.json): give "
                             "the run's own -o or a new one")


def restore(config, checkpoint, network, ema, optimizer, scheduler, generator, spec, out_dir, targets_key):
    """Restore a `last.pt` checkpoint (`load_checkpoint`, its options checked by `check_resume`);
    return (next epoch, optimiser steps done, history so far, best weights so far, seconds the run had
    taken), so that the run goes on as if it had not stopped.

    Raises:
        UsageError: the checkpoint's input spec (the normalisation comes from the images) or soft
            targets (the teachers' weights, the unlabelled images) are not this run's.
    """
    if checkpoint.get("spec") != spec.to_dict():
        raise UsageError(f"checkpoint {config.resume} was trained with another input spec (the images' "
                         "normalisation changed: other images under the same names?)")
    if "targets_key" in checkpoint and checkpoint["targets_key"] != targets_key:
        raise UsageError(f"checkpoint {config.resume} learned from other soft targets: a teacher's weights or the "
                         "unlabelled images changed since it was written")
    network.load_state_dict(checkpoint["model"])
    ema.module.load_state_dict(checkpoint["ema"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if "generator" in checkpoint:  # the augmentation and dropout streams continue where they stopped
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
    if "history" in checkpoint:  # the epochs before, wherever the run writes now (another -o)
        history = checkpoint["history"]
    else:  # written by an earlier version: the history file of the folder resumed in
        history_path = out_dir / "history.json"
        history = json.loads(history_path.read_text())[: checkpoint["epoch"]] if history_path.exists() else []
    log.info("resumed from %s after epoch %d", config.resume, checkpoint["epoch"])
    # checkpoints written before the best weights were kept in them: the best of the epochs run from here
    return (checkpoint["epoch"] + 1, scheduler.last_epoch, history, checkpoint.get("best"),
            checkpoint.get("seconds", 0.0))


def load_checkpoint(path) -> dict:
    """A `last.pt` of `galaxy train`, or a UsageError saying the file is not one."""
    import pickle
    import zipfile

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise UsageError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, KeyError, ValueError, OSError) as exc:
        # torch.load raises any of these for a file that is not a checkpoint (text, another format, truncated:
        # cut 5,000 bytes in, an OSError "Invalid argument" from its zip reader)
        from galaxy.training.model import load_failure

        raise UsageError(f"{path} is not a checkpoint of galaxy train (give CHECKPOINT_DIR/last.pt): "
                         f"{load_failure(exc)}") from None
    if not isinstance(checkpoint, dict) or not {"epoch", "model", "ema", "optimizer", "scheduler"} <= checkpoint.keys():
        raise UsageError(f"{path} is not a checkpoint of galaxy train (give CHECKPOINT_DIR/last.pt)")
    return checkpoint


def _changed_on_resume(checkpoint: dict, config: TrainConfig) -> dict:
    """{option: [value the run began with, value now]} of the options a resume may change that change the
    model (`--epochs`, `--patience`, `--no-calibrate`), over every resume so far: the card's command,
    the one that began the run, then no longer makes the model alone."""
    changed = dict(checkpoint.get("changed_on_resume") or {})
    then, now = checkpoint.get("config", {}), config_dict(config)
    for key in ("epochs", "patience", "calibrate"):
        if key not in changed and key not in then:  # a checkpoint of an earlier version: unknown
            continue
        began = changed[key][0] if key in changed else then[key]
        if began != now.get(key):
            changed[key] = [began, now.get(key)]
        else:
            changed.pop(key, None)
    return changed


def _arithmetic(device, amp_dtype, checkpoint: dict | None) -> list[dict]:
    """What decides a run's floating-point sums, for each part of it: the checkpoint's parts, then this
    one's where it differs from the last (a resume with another thread count, CPU or autocast is not
    bit-identical to a run that did not stop, so it is warned of and recorded in the card)."""
    from galaxy.cores import cpu_description

    cpu = cpu_description()
    now = {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu["cpu"],
           "flags": cpu["flags"] if device.type == "cpu" else [], "threads": torch.get_num_threads(),
           "autocast": str(amp_dtype), "torch": str(torch.__version__)}
    before = list((checkpoint or {}).get("arithmetic") or [])
    if before and before[-1] != now:
        differs = "; ".join(f"{k} {before[-1].get(k)!r} then, {v!r} now" for k, v in now.items()
                            if before[-1].get(k) != v)
        log.warning("resuming on other arithmetic than the checkpoint's (%s): the model will not be bit-identical "
                    "to one from a run that did not stop (the card records each part's)", differs)
    return before if before and before[-1] == now else [*before, now]
