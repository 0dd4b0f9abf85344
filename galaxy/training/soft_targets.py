"""Soft targets from a teacher (one model, or an ensemble), for self-training and distillation.

Noisy Student (Xie et al. 2020): a trained teacher labels the images clean (no augmentation,
but D4 test-time averaging, which is free of noise for galaxies that have no up); a student
then learns from those soft targets under strong noise. Each teacher reads the images with its
own InputSpec and its calibrated temperature; an ensemble averages the probabilities. The
targets are computed once and cached in the work dir (`soft_targets.npz`, keyed by the
teachers' weights, the ids and the views), so a resumed run reuses them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galaxy.errors import UsageError
from galaxy.training.image_cache import build_cache
from galaxy.labels import ids_digest
from galaxy.training.predict import predict

log = logging.getLogger(__name__)

TARGETS_FILE = "soft_targets.npz"


def resolve_teachers(teachers, init_dir: str | None) -> tuple[str, ...]:
    """The teacher model folders: those given, else the initial model when it is a trained galaxy model.

    Raises:
        UsageError: no teacher is given and `init_dir` is not a galaxy model folder.
    """
    if teachers:
        return tuple(str(t) for t in teachers)
    if init_dir and (Path(init_dir) / "card.json").is_file():
        return (str(init_dir),)
    raise UsageError("soft targets need a teacher: --teacher MODEL_DIR, or --init a trained galaxy model "
                     f"(got --init {init_dir})")


def _teacher_record(model_dir: str, classes) -> tuple[dict, object]:
    from galaxy.card import load_card

    card = load_card(model_dir)
    if tuple(card.classes) != tuple(classes):
        raise UsageError(f"teacher {model_dir} has classes {card.classes}, training uses {tuple(classes)}")
    return {"dir": str(model_dir), "name": card.name, "weights_sha256": card.weights_sha256,
            "temperature": card.temperature}, card


def teacher_probabilities(teachers, classes, paths, ids, work_dir, views: int, workers: int, device, amp_dtype,
                          show: bool = True) -> tuple[np.ndarray, dict]:
    """The (ensemble-averaged, calibrated) teacher probabilities of every image, cached.

    Args:
        teachers: model folders.
        classes: the class names the targets must be in.
        paths, ids: the images (any order) and their ids.
        work_dir: where `soft_targets.npz` is kept.
        views: 8 for D4 test-time averaging, 1 for none.
        workers: image reading threads.
        device, amp_dtype: where the teachers run.

    Returns:
        (probabilities float32 (N, K) in the order of `ids`, record for the card: teachers,
        views, seconds and images/s of the labelling, whether the cache was reused).
    """
    from galaxy.training.model import load_network

    records = [_teacher_record(t, classes) for t in teachers]
    # Keyed by what the targets depend on (weights, temperature, images, views), not by where the teacher lies.
    key = {"teachers": [{k: v for k, v in r.items() if k != "dir"} for r, _ in records], "views": views,
           "ids_sha256": ids_digest(ids), "n": len(ids)}
    record = {**key, "teachers": [r for r, _ in records]}  # for the card: with the folders
    path = Path(work_dir) / TARGETS_FILE
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            if json.loads(str(stored["key"])) == key:
                where = {ident: i for i, ident in enumerate(stored["ids"].tolist())}
                log.info("soft targets: reusing %s", path)
                return stored["probabilities"][[where[i] for i in ids]], {**record, "reused": str(path)}
        log.info("soft targets: %s was made for other teachers or images; recomputing", path)
    timing = {}
    started, total = time.time(), np.zeros((len(ids), len(classes)), dtype=np.float64)
    for teacher, card in records:
        network, _ = load_network(teacher["dir"], card)
        network = network.to(device).to(memory_format=torch.channels_last)
        spec = card.input_spec
        cache = build_cache(paths, spec.crop_fraction, spec.size, workers, show, what="teacher input")
        t0 = time.time()
        total += predict(network, cache, spec, device, amp_dtype, views=views)
        timing[card.name] = round(time.time() - t0, 1)
        log.info("teacher %s: %d images x %d views in %.0f s (%.1f images/s)", card.name, len(ids), views,
                 timing[card.name], len(ids) / max(timing[card.name], 1e-9))
    probabilities = (total / len(records)).astype(np.float32)
    seconds = time.time() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(ids, dtype=str), probabilities=probabilities, key=json.dumps(key))
    tmp.replace(path)
    return probabilities, {**record, "seconds": round(seconds, 1), "inference_seconds": timing,
                           "images_per_s": round(len(ids) / seconds, 1)}


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Targets at a temperature: softmax(log p / T) of (N, K) probabilities (T > 1 softens)."""
    return torch.softmax(torch.log(probabilities.clamp_min(1e-7)) / temperature, dim=1)


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                     class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Knowledge-distillation loss: cross entropy of the student at T against targets at T, times T^2.

    Args:
        logits: (B, K) float32 student logits.
        targets: (B, K) teacher probabilities already at `temperature` (`sharpen`).
        temperature: T (Hinton et al. 2015; T^2 keeps gradients comparable across T).
        class_weights: (K,) or None; each row is weighted by its targets' expected class
            weight, so the imbalance correction of the label loss carries over.

    Returns:
        scalar float32.
    """
    per_row = -(targets * F.log_softmax(logits / temperature, dim=1)).sum(dim=1)
    weights = targets @ class_weights if class_weights is not None else torch.ones_like(per_row)
    return (weights * per_row).sum() / weights.sum() * temperature ** 2
