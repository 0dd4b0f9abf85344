"""Soft targets from a teacher (one model, or an ensemble), for self-training and distillation.

Noisy Student (Xie et al. 2020): a trained teacher labels the images clean (no augmentation,
but D4 test-time averaging, which is free of noise for galaxies that have no up); a student
then learns from those soft targets under strong noise. Each teacher reads the images with its
own InputSpec and its calibrated temperature; an ensemble averages the probabilities. The
targets are computed once and cached in the work dir (`soft_targets.npz`, keyed by the
teachers' weights, temperatures and input specs, the images' ids and contents in their order, and
the views), so a resumed run reuses them. Each teacher's own
probabilities are also cached under $GALAXY_CACHE/soft_targets/ (keyed the same way, one teacher),
so a new run with an ensemble that shares a member with an earlier run labels only the new members:
a 192 px teacher's D4 labels of ~10,000 images cost about half an hour on two CPU cores.

A run's `soft_targets.npz` also records the class names and the ids its teachers learned from, so
that it can stand in for the teachers (`--teacher-targets FILE`, `targets_from_file`): a teacher
trained on a GPU is 42 MB of weights, its targets on the 10,310 training images ~1 MB, and the
targets are all a student learns from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galaxy.config import cache_dir
from galaxy.errors import UsageError
from galaxy.training.image_cache import build_cache
from galaxy.card import ids_digest
from galaxy.training.predict import predict
from galaxy.training.targets_file import (TARGETS_FILE, _read_targets, _records_provenance, _write_targets,
                                          contents_digest)

log = logging.getLogger(__name__)


def resolve_teachers(teachers, init_dir: str | None) -> tuple[str, ...]:
    """The teacher model folders: those given, else the initial model when it is a trained galaxy model.

    Raises:
        UsageError: no teacher is given and `init_dir` is not a galaxy model folder.
    """
    if teachers:
        return tuple(str(t) for t in teachers)
    if init_dir and (Path(init_dir) / "card.json").is_file():
        return (str(init_dir),)
    got = f"--init {init_dir} has no card.json" if init_dir else "--init is scratch or imagenet"
    raise UsageError(f"soft targets need a teacher: --teacher MODEL_DIR, or --init a trained galaxy model ({got})")


def teacher_record(model_dir: str, classes) -> tuple[dict, object]:
    """(what the targets depend on of a teacher, with its folder; its card).

    Raises:
        ModelError: not a model folder, or weights that are not its card's.
        UsageError: other classes than the training's.
    """
    from galaxy.card import load_card

    card = load_card(model_dir)
    if tuple(card.classes) != tuple(classes):
        raise UsageError(f"teacher {model_dir} has classes {card.classes}, training uses {tuple(classes)}")
    return {"dir": str(model_dir), "name": card.name, "weights_sha256": card.weights_sha256,
            "temperature": card.temperature, "input_spec": card.input_spec.to_dict()}, card


def _placeless(teacher: dict) -> dict:
    """A teacher record without its folder: the same teacher elsewhere gives the same labels."""
    return {k: v for k, v in teacher.items() if k != "dir"}


def targets_source(teachers: list[dict], paths, ids, views: int) -> dict:
    """What soft targets depend on, the key of their caches: each teacher's weights, temperature and
    input spec (`teacher_record`, its folder left out: the same teacher elsewhere gives the same
    labels), the images' ids and contents in their order, the views. Keyed by ids alone (file stems),
    a folder of other images under the same names reused the old targets."""
    return {"teachers": [_placeless(t) for t in teachers], "views": views,
            "ids_sha256": ids_digest(ids), "n": len(ids), "contents_sha256": contents_digest(paths)}


def check_resumed_targets(expected: dict, teachers: list[dict], paths, ids, views: int, checkpoint) -> None:
    """Refuse, before anything is read or labelled, a resume whose soft targets would not be the
    checkpoint's (`expected`, its `targets_key`): a teacher replaced at its path, unlabelled images
    replaced or added. (The framing scale is measured later, from the same images.)

    Raises:
        UsageError: naming what differs.
    """
    now = json.loads(json.dumps(targets_source(teachers, paths, ids, views)))
    differs = [name for name in ("teachers", "views", "n", "ids_sha256", "contents_sha256")
               if expected.get(name) != now[name]]
    if differs:
        what = "a teacher's weights or inputs" if "teachers" in differs else "the images (their names or contents)"
        raise UsageError(f"checkpoint {checkpoint} learned from other soft targets: {what} changed since it was "
                         "written; resume with the teachers and images it was written with, or start a new run")


def targets_key(teacher: dict | None) -> dict | None:
    """What a run's soft targets were made from (the teachers' weights and inputs, the images' ids and
    contents, the views; read from a file, the file's sha256), from the teacher record; None without a teacher."""
    if teacher is None:
        return None
    return json.loads(json.dumps({key: value for key, value in teacher.items() if key in (
        "views", "ids_sha256", "n", "contents_sha256", "framing", "targets_sha256")} | {"teachers": [
            _placeless(member) for member in teacher.get("teachers", [])]}))


def teacher_probabilities(teachers, classes, paths, ids, work_dir, views: int, workers: int, device, amp_dtype,
                          show: bool = True, scale: float = 1.0,
                          scaled_from: int | None = None) -> tuple[np.ndarray, dict]:
    """The (ensemble-averaged, calibrated) teacher probabilities of every image, cached.

    Args:
        teachers: model folders.
        classes: the class names the targets must be in.
        paths, ids: the images (any order) and their ids.
        work_dir: where `soft_targets.npz` is kept.
        views: 8 for D4 test-time averaging, 1 for none.
        workers: image reading threads.
        device, amp_dtype: where the teachers run.
        scale, scaled_from: the images from index `scaled_from` on (the unlabelled ones) show their
            galaxies `scale` times as large as the teachers' training cutouts: each teacher reads them
            through a centre crop `scale` times its own (`--unlabeled-framing auto`).

    Returns:
        (probabilities float32 (N, K) in the order of `ids`, record for the card: teachers,
        views, seconds and images/s of the labelling, whether the cache was reused, and which
        members' labels came from the per-teacher cache).
    """
    records = [teacher_record(t, classes) for t in teachers]
    key = targets_source([r for r, _ in records], paths, ids, views)
    rescaled = scaled_from is not None and scaled_from < len(ids) and round(scale, 4) != 1
    if rescaled:  # only then, so targets cached before this option still match
        key["framing"] = {"scale": round(scale, 4), "scaled_ids_sha256": ids_digest(ids[scaled_from:])}
    common = {k: v for k, v in key.items() if k != "teachers"}
    record = {**key, "teachers": [r for r, _ in records]}  # for the card: with the folders
    path = Path(work_dir) / TARGETS_FILE
    stored = _read_targets(path, key, ids)
    if stored is not None:
        log.info("soft targets: reusing %s", path)
        learned = None if _records_provenance(path) else _teachers_learned(records)
        if learned is not None:  # written before files recorded it: what --teacher-targets needs
            _write_targets(path, ids, stored, key, classes, learned)
        return stored, {**record, "reused": str(path)}
    if path.is_file():
        log.info("soft targets: %s was made for other teachers or images; recomputing", path)
    timing, members_reused = {}, []
    started, total = time.time(), np.zeros((len(ids), len(classes)), dtype=np.float64)
    for teacher, card in records:
        member_key = {"teachers": [_placeless(teacher)], **common}
        member_path = _member_path(member_key)
        member = _read_targets(member_path, member_key, ids)
        if member is not None:
            log.info("teacher %s: reusing its labels of these images (%s)", card.name, member_path)
            members_reused.append(card.name)
            total += member
            continue
        with torch.random.fork_rng(devices=[]):  # building the teacher draws init weights: keep the seed's
            # stream as it is, so a run learns the same whether its targets were cached or computed
            member, timing[card.name] = _label(teacher["dir"], card, paths, views, workers, device, amp_dtype, show,
                                               scale if rescaled else 1.0, scaled_from if rescaled else len(paths))
        log.info("teacher %s: %d images x %d views in %.0f s (%.1f images/s)", card.name, len(ids), views,
                 timing[card.name], len(ids) / max(timing[card.name], 1e-9))
        _write_targets(member_path, ids, member, member_key)
        total += member
    probabilities = (total / len(records)).astype(np.float32)
    seconds = time.time() - started
    _write_targets(path, ids, probabilities, key, classes, _teachers_learned(records))
    return probabilities, {**record, "seconds": round(seconds, 1), "inference_seconds": timing,
                           "members_reused": members_reused, "images_per_s": round(len(ids) / seconds, 1)}


def _label(model_dir: str, card, paths, views: int, workers: int, device, amp_dtype, show: bool,
           scale: float = 1.0, scaled_from: int | None = None) -> tuple[np.ndarray, float]:
    """One teacher's calibrated probabilities (N, K) float64 of `paths` in their order, and the inference
    seconds; `paths[scaled_from:]` are read through a crop `scale` times the teacher's."""
    from galaxy.training.model import load_network

    network, _ = load_network(model_dir, card)
    network = network.to(device).to(memory_format=torch.channels_last)
    spec = card.input_spec
    split = len(paths) if scaled_from is None else scaled_from
    parts, seconds = [], 0.0
    for part, crop in ((paths[:split], spec.crop_fraction), (paths[split:], min(1.0, spec.crop_fraction * scale))):
        if not part:
            continue
        if crop != spec.crop_fraction:
            log.info("teacher %s reads %d unlabelled images through a centre crop of %.3f (its own: %g)",
                     card.name, len(part), crop, spec.crop_fraction)
        cache = build_cache(part, crop, spec.size, workers, show, what="teacher input")
        t0 = time.time()
        parts.append(np.asarray(predict(network, cache, spec, device, amp_dtype, views=views), dtype=np.float64))
        seconds += time.time() - t0
    return np.concatenate(parts), round(seconds, 1)


def _teachers_learned(records) -> list[str] | None:
    """Every id the teachers learned from (their `train_ids.txt`), or None when one does not record them."""
    from galaxy.card import training_ids

    learned = set()
    for teacher, card in records:
        ids = training_ids(teacher["dir"], card)
        if ids is None:
            return None
        learned |= ids
    return sorted(learned)


def _member_path(member_key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(member_key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "soft_targets" / f"{digest}.npz"


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
