"""The model card a finished training run writes: what it learned from (data, split, teachers), how
(config, command, device, threads, speed), which epoch's weights it chose, and how large the
galaxies of its training cutouts appear (the framing `galaxy framing` compares surveys with)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from galaxy.version import __version__
from galaxy.card import TRAIN_IDS_FILE, ModelCard, ids_digest, labels_digest
from galaxy.config import config_dict
from galaxy.io.framing import measure_files, summarise
from galaxy.training.train_data import TrainingData


def training_framing(data: TrainingData, workers: int = 0) -> dict:
    """How large the galaxies of the training cutouts appear (`galaxy.io.framing`): the reference that
    `galaxy framing` and `classify --crop-fraction auto` compare a survey's cutouts with. With
    `--apparent-size` the pool's measurement (the training split first) already holds them."""
    if data.pool_framing is not None:
        fractions = data.pool_framing[:len(data.train_set)].tolist()
    else:
        fractions, _ = measure_files(data.train_set.paths, data.spec, workers)
    return {**summarise(fractions), "of": "the labelled training split, full cutouts"}


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
               "val_labels_sha256": labels_digest(val_set),
               **({"train_ids_file": TRAIN_IDS_FILE} if data.inherited_ids is not None else {})},  # (as `learned_ids`)
        package_version=__version__,
    )
