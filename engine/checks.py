"""Reduced-precision backends checked against fp32 on the model's validation split.

A backend passes when its labels agree with ONNX Runtime fp32 on at least
`MIN_AGREEMENT` of the validation images; `--backend auto` offers only CPU backends that
passed (and no GPU backend whose check failed; an unchecked one is offered, as the GPU path's).
The figures (agreement, accuracy and its change, max |dp|, engine-only speed on this machine) are
written into the model card, beside the speeds measured on the machines checked before
(`galaxy.card.speeds_by_machine`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine import backends
from engine.artifacts import resolve_model
from engine.listing import Item
from engine.machine import cpu_flags, cpu_name, int8_arithmetic
from engine.pipelines.base import decode_stream
from galaxy.cores import usable_cores
from galaxy.card import CARD_FILE, speeds_by_machine
from galaxy.errors import GalaxyError, UsageError
from galaxy.files import writable_folder
from galaxy.labels import validation_split
from galaxy.evaluation.metrics import classification_report, label_agreement, require_finite

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.995
SPEED_IMAGES = 256  # validation images per timed pass
SPEED_ROUNDS = 3


def batched_probabilities(session, tensors, batch) -> np.ndarray:
    """float32 (N, K) probabilities of ready tensors (N, C, H, W), `batch` rows at a time."""
    return np.concatenate([session.run(tensors[i:i + batch]) for i in range(0, len(tensors), batch)])


def _speeds(sessions: dict, tensors, batch, rounds=SPEED_ROUNDS) -> dict[str, float]:
    """Engine images/s of each session: the best of `rounds` passes, the sessions taking turns.

    A shared machine's speed drifts by tens of percent within minutes; turns spread the drift
    over every backend and the best pass is the least disturbed one.
    """
    best = dict.fromkeys(sessions, 0.0)
    for _ in range(rounds):
        for name, session in sessions.items():
            started = time.perf_counter()
            batched_probabilities(session, tensors, batch)
            best[name] = max(best[name], len(tensors) / (time.perf_counter() - started))
    return best


def validation_tensors(model_dir, card, data, label_column, path_column):
    """(validation split, its preprocessed tensors (N, C, H, W) float32, labels (N,)).

    Decoded once and held, not streamed through the Runner as the classifying commands are: every
    backend checked must see the very same tensors (an agreement of labels, not of decoders), and the
    speeds are of the engine alone."""
    val = validation_split(model_dir, card, data, label_column, path_column)
    decoded = list(decode_stream((Item(p) for p in val.paths), card.input_spec, usable_cores(), 64))
    bad = [d.error for d in decoded if d.error is not None]
    if bad:
        raise UsageError(f"validation images unreadable: {bad[0]}")
    return val, np.stack([d.tensor for d in decoded]), np.array(val.labels)


def check_backends(model_dir, card, data, names=("torch", "onnxruntime-int8"), batch=32, label_column="label",
                   path_column="file") -> dict:
    """Run fp32 and each backend on the validation split; store and return the records.

    The records of backends not named this time are kept (a check of one backend does not undo the
    others'); a backend named and not loadable here loses its earlier record; the fp32 reference is
    measured every time.

    Raises:
        UsageError: a name that is no backend (before anything runs).
    """
    unknown = [name for name in names if name not in backends.BACKENDS or name == "onnxruntime"]
    if unknown:
        raise UsageError(f"cannot check backend {unknown[0]!r}: choose from "
                         f"{', '.join(n for n in backends.BACKENDS if n != 'onnxruntime')} "
                         "(onnxruntime fp32 is the reference every check runs)")
    # the results go into the card: a folder that cannot take it had been found after every image was run
    writable_folder(model_dir, f"cannot write {Path(model_dir) / CARD_FILE}")
    val, tensors, labels = validation_tensors(model_dir, card, data, label_column, path_column)
    options = backends.BackendOptions(batch_size=batch)
    sessions = {"onnxruntime": backends.load("onnxruntime", model_dir, card, options)}
    not_checked = {}
    for name in names:
        try:
            # by name, not `load`: its warnings that this CPU's check is missing or failed are about this very run
            sessions[name] = backends.load_named(name, model_dir, card, options)
        except GalaxyError as exc:  # e.g. no int8 model built yet: the others are still checked
            log.warning("%s not checked: %s", name, exc)
            not_checked[name] = str(exc)
    names = [name for name in names if name in sessions]
    probabilities = {name: batched_probabilities(session, tensors, batch) for name, session in sessions.items()}
    for name, probs in probabilities.items():  # (a NaN model had passed: every backend argmaxed alike to class 0)
        require_finite(probs, f"{card.name} ({model_dir}) on {name}")
    speeds = _speeds(sessions, tensors[:SPEED_IMAGES], batch)
    reference = probabilities["onnxruntime"]
    fp32 = classification_report(labels, reference, card.classes)
    records = {"onnxruntime": {"precision": "fp32", "accuracy": fp32["accuracy"],
                               "images_per_s": round(speeds["onnxruntime"], 1), "passed": True}}
    for name in names:
        probs = probabilities[name]
        report = classification_report(labels, probs, card.classes)
        agreement = label_agreement(probs, reference)
        records[name] = {
            "precision": sessions[name].precision, "label_agreement": round(agreement, 5),
            "accuracy": report["accuracy"], "accuracy_change": round(report["accuracy"] - fp32["accuracy"], 5),
            "max_abs_dp": round(float(np.abs(probs - reference).max()), 5),
            "images_per_s": round(speeds[name], 1), "passed": agreement >= MIN_AGREEMENT,
        }
        for key in ("recipe", "fingerprint"):  # int8: which model was checked
            if getattr(sessions[name], key, None):
                records[name][key] = getattr(sessions[name], key)
        log.info("%s: %s", name, records[name])
    machine = f"{cpu_name()} ({cpu_flags()}), {usable_cores()} cores"
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for record in records.values():  # kept records of earlier checks carry their own date and machine
        record["checked"], record["machine"] = today, machine
    # int8's check holds on CPUs of the int8 arithmetic it ran on: the checks of the others are kept beside it
    int8_checks = {arithmetic: dict(rec, arithmetic=arithmetic)
                   for arithmetic, rec in backends.int8_checks(card.backends or {}).items()}
    this_cpu = int8_arithmetic()
    if "onnxruntime-int8" in records:
        records["onnxruntime-int8"]["arithmetic"] = this_cpu
        int8_checks[this_cpu] = records["onnxruntime-int8"]
    elif "onnxruntime-int8" in not_checked:
        int8_checks.pop(this_cpu, None)
    # an earlier pass of a backend asked for now and not loadable no longer holds: dropped, not kept
    kept = {name: rec for name, rec in (card.backends or {}).get("results", {}).items()
            if name not in records and name not in not_checked}
    if "onnxruntime-int8" in kept:  # said in words, as it is read now (it is of another machine than this check's)
        kept["onnxruntime-int8"] = dict(kept["onnxruntime-int8"],
                                        arithmetic=backends.record_arithmetic(kept["onnxruntime-int8"]))
    history = speeds_by_machine(card.backends or {})
    # this machine's speeds: those measured now, beside those of kept backends measured here before
    before = history.get(machine, {})
    here = {name: speed for name, speed in before.items() if name in kept}
    # each kept speed keeps the day it was measured: read beside today's as one run's, a figure of
    # another day (other load) gave a ratio no run measured (review of the derived engines)
    earlier = {name: before.get("measured_before", {}).get(name, before.get("measured")) for name in here}
    here |= {name: round(speed, 1) for name, speed in speeds.items()} | {"measured": today}
    if earlier:
        here["measured_before"] = earlier
    card.backends = {"min_agreement": MIN_AGREEMENT, "n_val": len(val), "batch": batch,
                     "speed": f"best of {SPEED_ROUNDS} interleaved passes over {min(SPEED_IMAGES, len(val))} images",
                     "machine": machine, "results": records | kept,
                     # the check is this machine's; the speeds of the machines checked before are kept
                     "speeds": history | {machine: here}}
    if int8_checks:
        card.backends["int8_arithmetic"] = int8_checks
    if not_checked:
        card.backends["not_checked"] = not_checked
    card.save(model_dir)
    return card.backends


def check_model_backends(config) -> dict:
    """`galaxy check-backends` (a CheckConfig)."""
    model_dir, card = resolve_model(config.model_dir)
    return check_backends(model_dir, card, config.data, config.backends, label_column=config.label_column,
                          path_column=config.path_column)
