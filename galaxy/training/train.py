"""`galaxy train`: fit a timm classifier to labelled (and unlabelled) cutouts on the CPU or a GPU.

The recipe: images are read once by the reference reader into an in-memory cache of a wider
field (`galaxy.training.train_data`); every step resamples each image with a random zoom, rotation,
flip and shift and applies photometric noise (flux, PSF blur, pixel noise, another colour
composite; `galaxy.training.augment`, each switchable with `--augment`); AdamW with linear warm-up
then cosine decay; class-weighted cross entropy (the classes are imbalanced); an
exponential moving average of the weights; bf16 autocast and channels_last where the
hardware has bf16 (AMX/AVX512-BF16 CPUs, CUDA). Every epoch writes a checkpoint and a line
of metrics; the best of (weights, EMA weights) over the epochs by validation accuracy is kept.

Self-training (`--unlabeled`, Noisy Student): a teacher labels the training and unlabelled
images once with soft targets (`galaxy.training.soft_targets`); the student learns from the labels
plus those targets under the noise above and dropout. Transfer learning (`--init`, gradual
unfreezing, discriminative rates) is in `galaxy.training.transfer`; optional early stopping watches
the validation loss. Finally the temperature is fitted on the validation split
(`galaxy.evaluation.calibration`) and stored in the card.

This module runs the epochs; a step's batch and loss are `galaxy.training.train_batch`, the card
`galaxy.training.train_card`, what a resume checks and records `galaxy.training.checkpoint`.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galaxy.evaluation.calibration import LOG_T_RANGE, at_range_edge, calibration_record, log_probabilities, softmax_t
from galaxy.card import TRAIN_IDS_FILE, ModelCard, strict_json
from galaxy.config import TrainConfig, config_dict
from galaxy.errors import GalaxyError, TrainingDiverged, UsageError
from galaxy.files import free_bytes, hold_lock, same_file, writable_folder, write_atomically
from galaxy.labels import require_outside_class_folders
from galaxy.evaluation.metrics import accuracy_at_coverage, classification_report, expected_calibration_error
from galaxy.training.model import network_cost, save_weights
from galaxy.training.predict import pick_device, predict
from galaxy.progress import progress
from galaxy.training.checkpoint import (PATH_OPTIONS, _arithmetic, _changed_on_resume, check_resume, load_checkpoint,
                                        restore)
from galaxy.training.soft_targets import targets_key
from galaxy.training.targets_file import keep_targets
from galaxy.training.train_batch import _batch_loss, _caches_to, _training_batch, scale_consistency_loss
from galaxy.training.train_card import _card
from galaxy.training.train_data import prepare_data
from galaxy.training.transfer import _initial_network, apply_freeze, depth_groups, optimizer_groups, trainable_from

log = logging.getLogger(__name__)


# Held in -o while a run trains into it (hidden; git ignores it).
TRAIN_LOCK = ".galaxy-train.lock"
CHECKPOINTS_LOCK = ".galaxy-checkpoints.lock"  # in the work dir, held while a run writes its checkpoints there


def _write_history(out_dir, history: list[dict]) -> None:
    """The per-epoch metrics of a run, `history.json`: strict JSON (a NaN loss is null), written whole."""
    write_atomically(out_dir / "history.json", lambda tmp: tmp.write_text(
        json.dumps(strict_json(history), indent=1, allow_nan=False) + "\n"))


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _finite(loss: torch.Tensor, epoch: int, batch: int) -> float:
    """The batch loss as a number; TrainingDiverged when it is NaN or infinite: one more step would
    make the weights NaN, and a run that went on would save a model that calls everything one class."""
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingDiverged(f"training diverged: the loss is {value} at epoch {epoch}, batch {batch + 1} "
                               "(a lower --lr, or other --soft-temperature / --soft-weight; the last finished "
                               "epoch's checkpoint, if any, is kept)")
    return value


def _stopping_count(best_loss: float, stale: int, row: dict) -> tuple[float, int]:
    """Early stopping's (best validation loss, epochs since it) after the epoch of history `row`."""
    epoch_loss = min(row["val_raw"]["loss"], row["val_ema"]["loss"])
    return (epoch_loss, 0) if epoch_loss < best_loss else (best_loss, stale + 1)


def _saved(write, path: Path):
    """`write()`, with a full disk said as one: torch.save raises a RuntimeError ("unexpected pos" from its
    zip writer) and safetensors a SafetensorError, each a traceback that named neither the disk nor the file."""
    try:
        return write()
    except OSError:
        raise
    except Exception as exc:
        free = free_bytes(Path(path).parent)
        if free is not None and free < 64 * 2**20:  # what is left cannot hold a checkpoint or a model
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def train(config: TrainConfig) -> ModelCard:
    """Train, pick the best weights, save them with their card; return the card."""
    torch.manual_seed(config.training_seed)
    np.random.seed(config.training_seed)
    generator = torch.Generator().manual_seed(config.training_seed)
    out_dir = Path(config.out_dir)
    if (out_dir / "card.json").is_file() and not config.resume:
        raise UsageError(f"{out_dir} already holds a model (its card.json): give another -o, or remove it first")
    checkpoint = load_checkpoint(config.resume) if config.resume else None  # before any image is read
    if checkpoint is not None:
        check_resume(config, checkpoint, out_dir)
    work_dir = Path(config.work_dir) if config.work_dir else out_dir / "checkpoints"
    if not config.resume and (work_dir / "last.pt").is_file():  # (a new run had written over it: the interrupted
        # run, or the finished model whose checkpoints --work-dir named, could no longer be resumed)
        raise UsageError(f"{work_dir / 'last.pt'} is another run's checkpoint: resume it (--resume "
                         f"{work_dir / 'last.pt'}), or give another -o / --work-dir, or delete it first")
    made = [folder for folder in (out_dir, work_dir) if not folder.exists()]
    require_outside_class_folders(out_dir, config.data, config.classes, "-o")
    writable_folder(out_dir, "cannot write the model")  # before the caches and epochs, not after them
    writable_folder(work_dir, "cannot write the checkpoints")
    # held until train() returns: a second run into the same -o wrote its checkpoints over this one's
    # and the last to finish replaced the other's model, both saying "wrote"
    lock = hold_lock(out_dir / TRAIN_LOCK, f"another galaxy train is writing {out_dir}")
    try:
        # and the checkpoints' folder (a lock of its own name: it may be -o itself): two runs sharing one, another
        # run's default OUT/checkpoints too, wrote over each other's last.pt
        with hold_lock(work_dir / CHECKPOINTS_LOCK, f"another galaxy train is writing its checkpoints to {work_dir}"):
            return _train_locked(config, checkpoint, out_dir, work_dir, generator)
    except GalaxyError:  # refused before its first checkpoint (fewer images than a batch, a changed image, an
        # unreadable one, a broken teacher card): the folders it made go (they held only its locks)
        if not (work_dir / "last.pt").exists():
            for folder in made:
                shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        lock.close()


def _train_locked(config: TrainConfig, checkpoint: dict | None, out_dir: Path, work_dir: Path,
                  generator: torch.Generator) -> ModelCard:
    """`train` once its folders are locked."""
    device, amp_dtype = pick_device()
    log.info("training on %s, autocast %s, %d threads", device, amp_dtype, torch.get_num_threads())

    network = _initial_network(config).to(device).to(memory_format=torch.channels_last)
    arithmetic = _arithmetic(device, amp_dtype, checkpoint)
    preparing = time.time()
    data = prepare_data(config, work_dir, device, amp_dtype, checkpoint)
    # the --teacher-targets file beside the card, copied now (its sha256 checked again), not after the epochs: a file
    # moved or changed meanwhile had ended a finished run without a card
    if config.teacher_targets:  # (the record then names the copy: `targets_key` leaves the name out)
        data.teacher = keep_targets(data.teacher, out_dir)
    data_minutes = round((time.time() - preparing) / 60, 1)
    _caches_to(data, device)
    spec, val_set = data.spec, data.val_set
    labelled = data.pool_labels[data.pool_labels >= 0]
    counts = torch.bincount(labelled, minlength=len(config.classes)).float()
    class_weights = (counts.sum() / (len(counts) * counts.clamp(min=1))).to(device)

    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(network, decay=config.ema_decay, use_warmup=True)
    groups = depth_groups(network, config.layer_decay)
    optimizer = torch.optim.AdamW(optimizer_groups(groups, config.lr), lr=config.lr, weight_decay=config.weight_decay)
    pool_size = len(data.pool_labels)
    steps_per_epoch = pool_size // config.batch_size
    if steps_per_epoch == 0:
        raise UsageError(f"{pool_size} training images are fewer than one batch of {config.batch_size}")
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total_steps))
    mean = torch.tensor(spec.mean, device=data.pool_cache.device).view(1, -1, 1, 1)  # where batches are made
    std = torch.tensor(spec.std, device=data.pool_cache.device).view(1, -1, 1, 1)
    val_labels = np.array(val_set.labels)
    history, best, started, step, first_epoch, resumed_with = [], None, time.time(), 0, 1, []
    changed_on_resume = {}
    cwd = (checkpoint or {}).get("cwd") or os.getcwd()  # the folder of the command that started the run
    if config.resume:
        first_epoch, step, history, best, seconds = restore(config, checkpoint, network, ema, optimizer, scheduler,
                                                           generator, spec, out_dir, targets_key(data.teacher))
        # the card's command is the one that started the run (rerun, the resume command only copies the
        # checkpoint's weights); the resumes follow it in `resumed_with`
        resumed_with = [*checkpoint.get("resumed_with", []), config.command]
        changed_on_resume = _changed_on_resume(checkpoint, config)
        command = checkpoint.get("config", {}).get("command") or config.command
        # its files as the command that started it named them (from `cwd`, the card's folder too); a resume
        # from another folder names the same files otherwise (check_resume compared them)
        begun = {k: checkpoint["config"][k] for k in PATH_OPTIONS if k in checkpoint.get("config", {})}
        if not same_file(cwd, os.getcwd()):  # where this resume writes, named so that it reads from `cwd` too
            begun |= {k: os.path.abspath(v) for k, v in (("out_dir", config.out_dir), ("work_dir", config.work_dir))
                      if v}
        config = dataclasses.replace(config, command=command, **{k: v if not isinstance(v, list) else tuple(v)
                                                                 for k, v in begun.items()})
        started -= seconds  # the card's minutes are the whole run's, the stop not counted
    best_loss, stale, stopped = float("inf"), 0, None
    for row in history:  # early stopping's count, as the epochs before a resume left it
        best_loss, stale = _stopping_count(best_loss, stale, row)
    if config.patience and history and stale >= config.patience:  # it had stopped; killed before saving
        stopped, first_epoch = history[-1]["epoch"], config.epochs + 1
        if stopped < config.epochs:
            log.warning("the run had stopped early after epoch %d (no better validation loss for %d epochs): "
                        "raise --patience to train on", stopped, stale)

    for epoch in range(first_epoch, config.epochs + 1):
        network.train()
        first_trainable = trainable_from(epoch, config.freeze_epochs, len(groups))
        apply_freeze(groups, first_trainable)
        order = torch.randperm(pool_size, generator=generator)
        losses, seen, epoch_start = [], 0, time.time()
        bar = progress(f"epoch {epoch}/{config.epochs}", "batch", total=steps_per_epoch, enabled=config.progress,
                       leave=False)
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            x = _training_batch(data, idx, config, generator, mean, std, device)
            targets = data.targets[idx].to(device) if data.targets is not None else None
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = network(x)
            loss = _batch_loss(logits[:len(idx)], data.pool_labels[idx].to(device), targets, class_weights, config)
            if config.scale_consistency:
                loss = loss + config.scale_consistency * scale_consistency_loss(logits[:len(idx)], logits[len(idx):])
            value = _finite(loss, epoch, b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            ema.update(network, step=step)
            losses.append(value)
            seen += len(idx)
            bar.update(1)
            bar.set_postfix_str(f"loss={np.mean(losses[-20:]):.3f}")
        bar.close()
        train_seconds = time.time() - epoch_start
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[-1],
               "train_images_per_s": seen / train_seconds, "seconds": round(train_seconds, 1),
               "training": [g.name for g in groups[first_trainable:]]}
        for tag, candidate in (("raw", network), ("ema", ema.module)):
            probs = predict(candidate, data.val_cache, spec, device, amp_dtype)
            report = classification_report(val_labels, probs, config.classes)
            # (roc_auc: two classes only, none for K > 2, where it had been a KeyError after the first epoch)
            row[f"val_{tag}"] = {k: report.get(k) for k in ("accuracy", "balanced_accuracy", "roc_auc")}
            row[f"val_{tag}"]["loss"] = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-7)),
                                                         torch.from_numpy(val_labels)))
            if best is None or report["accuracy"] > best["accuracy"]:
                best = {"accuracy": float(report["accuracy"]), "epoch": epoch, "weights": tag,
                        "state": copy.deepcopy(candidate.state_dict())}
        history.append(row)
        log.info("epoch %d: %s", epoch, json.dumps(row))
        _write_history(out_dir, history)
        state = {"epoch": epoch, "model": network.state_dict(), "ema": ema.module.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "config": config_dict(config), "spec": spec.to_dict(), "best": best, "history": history,
                 "seconds": time.time() - started, "targets_key": targets_key(data.teacher),
                 "resumed_with": resumed_with, "cwd": cwd, "labelled_sha256": data.labelled_sha256,
                 "arithmetic": arithmetic, "changed_on_resume": changed_on_resume,
                 # what `--init` of this checkpoint is checked by: the images it learned (its training split, and
                 # what its initial weights and teachers learned), so no validation image of a run from it is one
                 "learned": data.learned_ids()}
        write_atomically(work_dir / "last.pt", lambda tmp: _saved(lambda: torch.save(state, tmp), tmp))
        best_loss, stale = _stopping_count(best_loss, stale, row)
        if config.patience and stale >= config.patience:
            stopped = epoch
            log.info("early stop after epoch %d: no better validation loss for %d epochs", epoch, stale)
            break

    if best is None:
        raise UsageError(f"checkpoint {config.resume} ends at the last epoch and, written by an earlier version, does "
                         "not hold the best weights: rerun without --resume")
    if first_epoch > config.epochs:  # resumed after the last epoch: no epoch wrote this -o's history
        _write_history(out_dir, history)
    network.load_state_dict(best["state"])
    weights_sha = _saved(lambda: save_weights(network, out_dir), out_dir / "model.safetensors")
    (out_dir / "val_ids.txt").write_text("\n".join(val_set.ids) + "\n", encoding="utf-8")
    learned = data.learned_ids()
    if learned is not None:  # for leak checks by later runs
        (out_dir / TRAIN_IDS_FILE).write_text("\n".join(learned) + "\n", encoding="utf-8")
    else:  # later runs then take it to have learned all of its data outside its validation split
        (out_dir / TRAIN_IDS_FILE).unlink(missing_ok=True)
        log.warning("%s records no %s: its initial weights or a teacher do not record the images they learned, so "
                    "no complete list can be written (later leak checks fall back to its validation split)",
                    out_dir, TRAIN_IDS_FILE)
    from galaxy.training.model import load_network

    card = _card(config, data, best, history, stopped, started, device, amp_dtype, weights_sha,
                 network_cost(network, config.size))
    card.training["cwd"] = cwd  # the folder of the command that started the run: its paths are relative to it
    card.training["data_minutes"] = data_minutes
    if resumed_with:
        card.training["resumed_with"] = resumed_with
    if changed_on_resume:  # the command alone no longer makes this model
        card.training["changed_on_resume"] = changed_on_resume
    if len(arithmetic) > 1:
        card.training["arithmetic"] = arithmetic
    # the card is written once, last: one written before the calibration and metrics made a run killed
    # between the two a folder that looked finished (classify used it uncalibrated; a rerun was refused)
    # Validation metrics of the weights as shipped: fp16 on disk, fp32 inference, exact preprocessing.
    shipped, _ = load_network(out_dir, card)
    probs = predict(shipped.to(device).to(memory_format=torch.channels_last), data.val_cache, spec, device, None)
    if config.calibrate:
        card.calibration = calibration_record(log_probabilities(probs), val_labels)
        if at_range_edge(card.calibration["temperature"]):
            log.warning("temperature %g is at the edge of the range a fit searches (%.2g-%.2g): the model is barely "
                        "trained or broken, and its probabilities are not calibrated", card.calibration["temperature"],
                        *(math.exp(bound) for bound in LOG_T_RANGE))
        card.calibration.update({"split": "validation", "backend": "torch fp32"})
        probs = softmax_t(log_probabilities(probs), card.temperature)
    report = classification_report(val_labels, probs, config.classes)
    report["ece"] = expected_calibration_error(val_labels, probs)[0]
    report["accuracy_at_coverage"] = accuracy_at_coverage(val_labels, probs)
    card.metrics = {"validation": report}
    card.save(out_dir)
    from galaxy.evaluation.plots import training_curves

    training_curves(history, out_dir / "curves.png")
    return card
