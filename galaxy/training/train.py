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
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import logging
import math
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galaxy.version import __version__
from galaxy.training.augment import geometric_views, larger_view_crops, photometric, view_crops
from galaxy.evaluation.calibration import LOG_T_RANGE, at_range_edge, calibration_record, log_probabilities, softmax_t
from galaxy.card import TRAIN_IDS_FILE, ModelCard, load_card, strict_json
from galaxy.config import TrainConfig, config_dict
from galaxy.errors import GalaxyError, TrainingDiverged, UsageError
from galaxy.files import free_bytes, hold_lock, same_file, writable_folder, write_atomically
from galaxy.card import ids_digest
from galaxy.evaluation.metrics import accuracy_at_coverage, classification_report, expected_calibration_error
from galaxy.training.model import create_network, init_imagenet, load_partial, network_cost, read_state_dict, save_weights
from galaxy.training.predict import pick_device, predict
from galaxy.progress import progress
from galaxy.io.framing import measure_files, summarise
from galaxy.training.checkpoint import PATH_OPTIONS, check_resume, load_checkpoint, restore
from galaxy.training.soft_targets import keep_targets, soft_target_loss, targets_key
from galaxy.training.train_data import TrainingData, prepare_data
from galaxy.training.transfer import (apply_freeze, checkpoint_record, depth_groups, heads_by_class, init_model_folder,
                                      initial_weights, optimizer_groups, trainable_from)

log = logging.getLogger(__name__)


# Held in -o while a run trains into it (hidden; git ignores it).
TRAIN_LOCK = ".galaxy-train.lock"
CHECKPOINTS_LOCK = ".galaxy-checkpoints.lock"  # in the work dir, held while a run writes its checkpoints there


def _initial_network(config: TrainConfig) -> torch.nn.Module:
    n, init = len(config.classes), initial_weights(config.init)
    if init == "scratch":
        return create_network(config.architecture, n, config.drop_rate)
    if init == "imagenet":
        return init_imagenet(config.architecture, n, config.drop_rate)
    network = create_network(config.architecture, n, config.drop_rate)
    state = read_state_dict(init)
    # what the weights are of: a model folder's card, or the config a training checkpoint (last.pt) recorded
    folder, checkpoint = init_model_folder(init), checkpoint_record(init)
    recorded, where = ((load_card(folder, verify=False).to_dict(), folder) if folder is not None else
                       (checkpoint["config"], init) if checkpoint is not None else ({}, None))
    architecture, classes = recorded.get("architecture"), tuple(recorded.get("classes") or ())
    if architecture and architecture != config.architecture:  # all but a bias had been left at random, unsaid
        raise UsageError(f"--init {config.init} is a {architecture} ({where}); --arch {config.architecture}"
                         f" cannot take its weights: give --arch {architecture}, or --init scratch")
    if classes:
        state = heads_by_class(network, state, classes, tuple(config.classes))
    fresh = load_partial(network, state)
    own = network.state_dict()
    if len(fresh) > len(own) / 2:
        raise UsageError(f"--init {config.init} fits only {len(own) - len(fresh)} of the {len(own)} tensors of "
                         f"{config.architecture} (e.g. {fresh[0]} left at random): weights of another architecture?")
    log.info("initialised from %s; left at random: %s", init, fresh)
    return network


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
                               "(a lower --lr, or other --soft-temperature / --soft-weight; the last good "
                               "epoch's checkpoint is kept)")
    return value


def _stopping_count(best_loss: float, stale: int, row: dict) -> tuple[float, int]:
    """Early stopping's (best validation loss, epochs since it) after the epoch of history `row`."""
    epoch_loss = min(row["val_raw"]["loss"], row["val_ema"]["loss"])
    return (epoch_loss, 0) if epoch_loss < best_loss else (best_loss, stale + 1)


def _batch_loss(logits, labels, targets, class_weights, config: TrainConfig) -> torch.Tensor:
    """Class-weighted cross entropy on the labelled rows, plus the soft-target loss on all rows."""
    logits = logits.float()
    labelled = labels >= 0
    loss = logits.new_zeros(())
    if bool(labelled.any()):
        loss = F.cross_entropy(logits[labelled], labels[labelled], weight=class_weights)
    if targets is not None:
        loss = loss + config.soft_weight * soft_target_loss(logits, targets, config.soft_temperature, class_weights)
    return loss


def scale_consistency_loss(anchor_logits: torch.Tensor, larger_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_anchor || p_larger), the anchor's probabilities held fixed (as UDA and FixMatch hold the weakly
    augmented view): the network learns to call a galaxy shown larger what it calls it at the training scale.

    Args:
        anchor_logits, larger_logits: (B, K) logits of the same galaxies, the second view 1.1-1.5x larger.

    Returns:
        scalar float32, mean over the batch.
    """
    anchor = F.softmax(anchor_logits.detach().float(), dim=1)
    return (anchor * (torch.log(anchor.clamp_min(1e-8)) - F.log_softmax(larger_logits.float(), dim=1))).sum(1).mean()


def _training_batch(data: TrainingData, idx, config: TrainConfig, generator, mean, std, device) -> torch.Tensor:
    """Augmented, normalised float32 (B, 3, size, size) channels_last views of pool images `idx`; with
    `--scale-consistency`, (2B, ...): then rows B.. show the same galaxies 1.1-1.5x larger (own augmentation)."""
    zoom = config.zoom_range if "zoom" in config.augment else None
    on = data.pool_cache.device  # the caches lie on the GPU when training there (`_caches_to`)
    fields = data.pool_cache[idx.to(on)]
    if data.fits_cache is not None:  # some labelled samples as the FITS path shows their flux
        labelled = idx < len(data.fits_cache)
        chosen = labelled & (torch.rand(len(idx), generator=generator) < config.fits_probability)
        view = torch.randint(0, data.fits_cache.shape[1], (len(idx),), generator=generator)
        if chosen.any():
            fields = fields.clone()
            fields[chosen.to(on)] = data.fits_cache[idx[chosen].to(on), view[chosen].to(on)]
    framing = data.pool_framing[idx] if data.pool_framing is not None else None
    crop = view_crops(len(idx), config.crop_fraction, data.cache_fraction, zoom, generator, framing,
                      config.apparent_size)
    x = geometric_views(fields, config.size, config.crop_fraction, data.cache_fraction, zoom,
                        "rotate" in config.augment, config.jitter, generator, crop=crop)
    x = photometric(x, config.augment, generator)
    if config.scale_consistency:
        larger = geometric_views(fields, config.size, config.crop_fraction, data.cache_fraction, zoom,
                                 "rotate" in config.augment, config.jitter, generator,
                                 crop=larger_view_crops(crop, generator))
        x = torch.cat([x, photometric(larger, config.augment, generator)])
    return ((x - mean) / std).to(device).contiguous(memory_format=torch.channels_last)


def _caches_to(data: TrainingData, device: torch.device) -> None:
    """On a GPU, the training caches move there once and every batch is augmented there: the host
    would take longer to resample and perturb a batch than the GPU takes to learn from it."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True  # one input shape throughout: the fastest kernels are found once
    data.pool_cache = data.pool_cache.to(device)
    if data.fits_cache is not None:
        data.fits_cache = data.fits_cache.to(device)


def training_framing(data: TrainingData, workers: int = 0) -> dict:
    """How large the galaxies of the training cutouts appear (`galaxy.io.framing`): the reference that
    `galaxy framing` and `classify --crop-fraction auto` compare a survey's cutouts with. With
    `--apparent-size` the pool's measurement (the training split first) already holds them."""
    if data.pool_framing is not None:
        fractions = data.pool_framing[:len(data.train_set)].tolist()
    else:
        fractions, _ = measure_files(data.train_set.paths, data.spec, workers)
    return {**summarise(fractions), "of": "the labelled training split, full cutouts"}


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


def _card(config, data: TrainingData, best, history, stopped, started, device, amp_dtype, weights_sha,
          cost: dict) -> ModelCard:
    train_set, val_set = data.train_set, data.val_set
    return ModelCard(
        name=config.name or Path(config.out_dir).name, architecture=config.architecture,
        classes=tuple(config.classes), input_spec=data.spec, weights_sha256=weights_sha,
        training={"command": config.command, "config": config_dict(config), "device": str(device),
                  "autocast": str(amp_dtype), "threads": torch.get_num_threads(),
                  "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
                  "minutes": round((time.time() - started) / 60, 1), "augment": list(config.augment),
                  "data": data.record(config), "teacher": data.teacher, "cost": cost,
                  "framing": training_framing(data, config.workers),
                  "chosen": {"epoch": best["epoch"], "weights": best["weights"]}, "stopped_early_at": stopped,
                  "images_per_s": round(float(np.mean([r["train_images_per_s"] for r in history])), 1)},
        split={"seed": config.seed, "val_fraction": config.val_fraction, "n_train": len(train_set),
               "n_val": len(val_set), "train_counts": train_set.counts(), "val_counts": val_set.counts(),
               "val_ids_file": "val_ids.txt", "val_ids_sha256": ids_digest(val_set.ids),
               **({"train_ids_file": TRAIN_IDS_FILE} if data.inherited_ids is not None else {})},  # (as `learned_ids`)
        package_version=__version__,
    )


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
    made = [folder for folder in (out_dir, work_dir) if not folder.exists()]
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
        write_atomically(out_dir / "history.json", lambda tmp: tmp.write_text(
            json.dumps(strict_json(history), indent=1, allow_nan=False) + "\n"))
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
        write_atomically(out_dir / "history.json", lambda tmp: tmp.write_text(
            json.dumps(strict_json(history), indent=1, allow_nan=False) + "\n"))
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
