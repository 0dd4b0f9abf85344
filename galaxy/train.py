"""`galaxy train`: fit a timm classifier to labelled cutouts on the CPU or a GPU.

The recipe: images are read once by the reference reader into an in-memory cache
(slightly wider crop, so random crops give translation jitter); every step draws a random
crop and one of the 8 D4 symmetries (galaxies have no up); AdamW with linear warm-up then
cosine decay; class-weighted cross entropy (the classes are imbalanced); an exponential
moving average of the weights; bf16 autocast and channels_last where the hardware has
bf16 (AMX/AVX512-BF16 CPUs, CUDA). Every epoch writes a checkpoint and a line of metrics;
the best of (weights, EMA weights) over the epochs by validation accuracy is kept.
Transfer learning (`--init`, gradual unfreezing, discriminative rates) is in
`galaxy.transfer`; optional early stopping watches the validation loss. Finally the
temperature is fitted on the validation split (`galaxy.calibration`) and stored in the card.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galaxy import __version__
from galaxy.card import ModelCard
from galaxy.config import TrainConfig, config_dict
from galaxy.errors import ImageReadError, UsageError
from galaxy.images import crop_resize, read_cutout
from galaxy.labels import LabelledSet, ids_digest, load_labelled, stratified_split
from galaxy.calibration import calibration_record, log_probabilities, softmax_t
from galaxy.metrics import accuracy_at_coverage, classification_report, expected_calibration_error
from galaxy.model import create_network, init_imagenet, load_partial, read_state_dict, save_weights
from galaxy.progress import progress
from galaxy.spec import InputSpec
from galaxy.votes import rule_from_config
from galaxy.transfer import apply_freeze, depth_groups, initial_weights, optimizer_groups, trainable_from

log = logging.getLogger(__name__)


def pick_device() -> tuple[torch.device, torch.dtype | None]:
    """(device, autocast dtype or None): bf16 where the hardware does it natively."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    if torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported():
        return torch.device("cpu"), torch.bfloat16
    return torch.device("cpu"), None


def build_cache(labelled: LabelledSet, crop_fraction: float, size: int, workers: int,
                show: bool = True) -> torch.Tensor:
    """Read every image once: float16 (N, 3, size, size) in [0, 1]."""
    spec = InputSpec()  # only its FITS stretch and bands are used here

    def one(path):
        pixels, _ = read_cutout(path, spec)
        return crop_resize(pixels, crop_fraction, size).transpose(2, 0, 1)

    cache = torch.empty((len(labelled), 3, size, size), dtype=torch.float16)
    bar = progress(f"reading {size}px", "img", total=len(labelled), enabled=show, leave=False)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for i, array in enumerate(pool.map(one, labelled.paths)):
            cache[i] = torch.from_numpy(array)
            bar.update(1)
    bar.close()
    return cache


def d4_random_crop(batch: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Per sample: a random `size` crop, a random 90-degree rotation and a random flip."""
    n, _, full, _ = batch.shape
    offsets = torch.randint(0, full - size + 1, (n, 2), generator=generator)
    turns = torch.randint(0, 4, (n,), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator)
    out = []
    for i in range(n):
        y, x = offsets[i].tolist()
        img = batch[i, :, y:y + size, x:x + size]
        img = torch.rot90(img, int(turns[i]), dims=(1, 2))
        out.append(img.flip(2) if flips[i] else img)
    return torch.stack(out)


@torch.inference_mode()
def predict(network, cache, spec, device, amp_dtype, batch_size=64) -> np.ndarray:
    """Class probabilities (N, K) float32 for a cache of [0, 1] images."""
    network.eval()
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    out = []
    for start in range(0, len(cache), batch_size):
        x = ((cache[start:start + batch_size].float() - mean) / std).to(device).contiguous(
            memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = network(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def _initial_network(config: TrainConfig) -> torch.nn.Module:
    n, init = len(config.classes), initial_weights(config.init)
    if init == "scratch":
        return create_network(config.architecture, n)
    if init == "imagenet":
        return init_imagenet(config.architecture, n)
    network = create_network(config.architecture, n)
    fresh = load_partial(network, read_state_dict(init))
    log.info("initialised from %s; left at random: %s", init, fresh)
    return network


def _check_init_split(config: TrainConfig, all_ids: list[str], val_ids: list[str]) -> None:
    """Refuse to fine-tune from a model trained on this data with another split.

    The data is taken to be shared when it holds any of the initial model's validation ids;
    then the splits must be identical, or the initial model's training images include some
    of our validation images and every validation figure would be optimistic.
    """
    init = Path(initial_weights(config.init))
    if not (init / "card.json").is_file():
        return
    from galaxy.card import load_card, validation_ids

    card = load_card(init, verify=False)
    init_val = validation_ids(init, card) or set()
    if init_val & set(all_ids) and ids_digest(val_ids) != card.split.get("val_ids_sha256"):
        raise UsageError(f"--init {config.init} was trained on images of {config.data} with another validation "
                         f"split (seed {card.split.get('seed')}, fraction {card.split.get('val_fraction')}); use the "
                         "same --seed and --val-fraction, or its training images leak into this validation split")


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _resume(config, network, ema, optimizer, scheduler, spec, out_dir):
    """Load a `last.pt` checkpoint; return (next epoch, optimiser steps done, history so far).

    The best weights of the epochs before the checkpoint are not kept in it: after a resume
    the kept weights are the best of the epochs run since.
    """
    checkpoint = torch.load(config.resume, map_location="cpu", weights_only=True)
    if checkpoint.get("spec") != spec.to_dict():
        raise UsageError(f"checkpoint {config.resume} was trained with another input spec")
    network.load_state_dict(checkpoint["model"])
    ema.module.load_state_dict(checkpoint["ema"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    history_path = out_dir / "history.json"
    history = json.loads(history_path.read_text())[: checkpoint["epoch"]] if history_path.exists() else []
    log.info("resumed from %s after epoch %d", config.resume, checkpoint["epoch"])
    return checkpoint["epoch"] + 1, scheduler.last_epoch, history


def train(config: TrainConfig) -> ModelCard:
    """Train, pick the best weights, save them with their card; return the card."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    work_dir = Path(config.work_dir) if config.work_dir else out_dir / "checkpoints"
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    device, amp_dtype = pick_device()
    log.info("training on %s, autocast %s, %d threads", device, amp_dtype, torch.get_num_threads())

    network = _initial_network(config).to(device).to(memory_format=torch.channels_last)
    labelled = load_labelled(config.data, config.classes, config.label_column, config.path_column,
                             rule_from_config(config_dict(config)))
    train_set, val_set = stratified_split(labelled, config.val_fraction, config.seed)
    if config.limit:
        train_set = train_set.subset(range(min(config.limit, len(train_set))))
        val_set = val_set.subset(range(min(config.limit, len(val_set))))
    log.info("train %s, validation %s", train_set.counts(), val_set.counts())
    _check_init_split(config, labelled.ids, val_set.ids)

    wide = int(round(config.size * (1 + config.jitter)))
    try:
        train_cache = build_cache(train_set, config.crop_fraction * wide / config.size, wide, config.workers,
                                  config.progress)
        val_cache = build_cache(val_set, config.crop_fraction, config.size, config.workers, config.progress)
    except ImageReadError as exc:
        raise ImageReadError(exc.path, f"training image unreadable: {exc.reason}") from None
    pixels = train_cache.float()
    spec = InputSpec(size=config.size, crop_fraction=config.crop_fraction,
                     mean=tuple(round(float(v), 5) for v in pixels.mean(dim=(0, 2, 3))),
                     std=tuple(round(float(v), 5) for v in pixels.std(dim=(0, 2, 3))))
    del pixels
    train_labels = torch.tensor(train_set.labels)
    counts = torch.bincount(train_labels, minlength=len(config.classes)).float()
    class_weights = counts.sum() / (len(counts) * counts.clamp(min=1))

    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(network, decay=config.ema_decay, use_warmup=True)
    groups = depth_groups(network, config.layer_decay)
    optimizer = torch.optim.AdamW(optimizer_groups(groups, config.lr), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(train_set) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total_steps))
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    val_labels = np.array(val_set.labels)
    history, best, started, step, first_epoch = [], None, time.time(), 0, 1
    if config.resume:
        first_epoch, step, history = _resume(config, network, ema, optimizer, scheduler, spec, out_dir)
    best_loss, stale, stopped = min((min(r["val_raw"]["loss"], r["val_ema"]["loss"]) for r in history),
                                    default=float("inf")), 0, None

    for epoch in range(first_epoch, config.epochs + 1):
        network.train()
        first_trainable = trainable_from(epoch, config.freeze_epochs, len(groups))
        apply_freeze(groups, first_trainable)
        order = torch.randperm(len(train_set), generator=generator)
        losses, seen, epoch_start = [], 0, time.time()
        bar = progress(f"epoch {epoch}/{config.epochs}", "batch", total=steps_per_epoch, enabled=config.progress,
                       leave=False)
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            x = d4_random_crop(train_cache[idx], config.size, generator).float()
            x = ((x - mean) / std).to(device).contiguous(memory_format=torch.channels_last)
            y = train_labels[idx].to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = network(x)
            loss = F.cross_entropy(logits.float(), y, weight=class_weights.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            ema.update(network, step=step)
            losses.append(loss.item())
            seen += len(idx)
            bar.update(1)
            bar.set_postfix_str(f"loss={np.mean(losses[-20:]):.3f}")
        bar.close()
        train_seconds = time.time() - epoch_start
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[-1],
               "train_images_per_s": seen / train_seconds, "seconds": round(train_seconds, 1),
               "training": [g.name for g in groups[first_trainable:]]}
        for tag, candidate in (("raw", network), ("ema", ema.module)):
            probs = predict(candidate, val_cache, spec, device, amp_dtype)
            report = classification_report(val_labels, probs, config.classes)
            row[f"val_{tag}"] = {k: report[k] for k in ("accuracy", "balanced_accuracy", "roc_auc")}
            row[f"val_{tag}"]["loss"] = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-7)),
                                                         torch.from_numpy(val_labels)))
            if best is None or report["accuracy"] > best["accuracy"]:
                best = {"accuracy": report["accuracy"], "epoch": epoch, "weights": tag,
                        "state": copy.deepcopy(candidate.state_dict())}
        history.append(row)
        log.info("epoch %d: %s", epoch, json.dumps(row))
        (out_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        torch.save({"epoch": epoch, "model": network.state_dict(), "ema": ema.module.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "config": config_dict(config), "spec": spec.to_dict()}, work_dir / "last.pt")
        epoch_loss = min(row["val_raw"]["loss"], row["val_ema"]["loss"])
        best_loss, stale = (epoch_loss, 0) if epoch_loss < best_loss else (best_loss, stale + 1)
        if config.patience and stale >= config.patience:
            stopped = epoch
            log.info("early stop after epoch %d: no better validation loss for %d epochs", epoch, stale)
            break

    network.load_state_dict(best["state"])
    weights_sha = save_weights(network, out_dir)
    (out_dir / "val_ids.txt").write_text("\n".join(val_set.ids) + "\n")
    from galaxy.model import load_network

    card = ModelCard(
        name=config.name or out_dir.name, architecture=config.architecture, classes=tuple(config.classes),
        input_spec=spec, weights_sha256=weights_sha,
        training={"command": config.command, "config": config_dict(config), "device": str(device),
                  "autocast": str(amp_dtype), "threads": torch.get_num_threads(),
                  "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
                  "minutes": round((time.time() - started) / 60, 1),
                  "chosen": {"epoch": best["epoch"], "weights": best["weights"]}, "stopped_early_at": stopped,
                  "images_per_s": round(float(np.mean([r["train_images_per_s"] for r in history])), 1)},
        split={"seed": config.seed, "val_fraction": config.val_fraction, "n_train": len(train_set),
               "n_val": len(val_set), "train_counts": train_set.counts(), "val_counts": val_set.counts(),
               "val_ids_file": "val_ids.txt", "val_ids_sha256": ids_digest(val_set.ids)},
        package_version=__version__,
    )
    card.save(out_dir)
    # Validation metrics of the weights as shipped: fp16 on disk, fp32 inference, exact preprocessing.
    shipped, _ = load_network(out_dir, card)
    probs = predict(shipped.to(device).to(memory_format=torch.channels_last), val_cache, spec, device, None)
    if config.calibrate:
        card.calibration = calibration_record(log_probabilities(probs), val_labels)
        card.calibration.update({"split": "validation", "backend": "torch fp32"})
        probs = softmax_t(log_probabilities(probs), card.temperature)
    report = classification_report(val_labels, probs, config.classes)
    report["ece"] = expected_calibration_error(val_labels, probs)[0]
    report["accuracy_at_coverage"] = accuracy_at_coverage(val_labels, probs)
    card.metrics = {"validation": report}
    card.save(out_dir)
    from galaxy.plots import training_curves

    training_curves(history, out_dir / "curves.png")
    return card
