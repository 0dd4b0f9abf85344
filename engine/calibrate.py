"""`galaxy calibrate`: fit the temperature on the model's validation split and store it in the card.

The fit itself (Guo et al. 2017) is galaxy/evaluation/calibration.py; this module runs the network on the
validation images (ONNX Runtime fp32, through the one Runner every classifying command uses) to get the
probabilities it is fitted on.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np

from engine.artifacts import resolve_model
from engine.listing import Item
from engine.runner import Runner
from galaxy.card import CARD_FILE, labels_digest
from galaxy.errors import UsageError
from galaxy.files import writable_folder
from galaxy.evaluation.calibration import (LOG_T_RANGE, at_range_edge, calibration_record, log_probabilities,
                                          scaled_nll, softmax_t)
from galaxy.evaluation.metrics import expected_calibration_error, require_finite
from galaxy.labels import validation_split

log = logging.getLogger(__name__)

REFIT_TOLERANCE = 1e-3  # a refit factor this close to 1 leaves the stored temperature as it is


def calibrate(model_dir, card, data, batch=32, label_column="label", path_column="file") -> dict:
    """Fit the temperature on the validation split with ONNX Runtime fp32; store it in the card.

    The probabilities already carry the card's current temperature T0, so log p = logits / T0 + c:
    T is fitted on T0 log p, the network's own logits. Calibrating twice is a no-op (a fit within
    REFIT_TOLERANCE of T0 keeps T0). Changing T changes the engine key: derived engines are rebuilt
    on next use.
    """
    writable_folder(model_dir, f"cannot write {Path(model_dir) / CARD_FILE}")  # before the split is scored
    val = validation_split(model_dir, card, data, label_column, path_column)
    _require_the_validated_labels(card, val, data)
    runner = Runner(model_dir, card, "onnxruntime", batch_size=batch)
    probs, labels = _validation_probabilities(runner, val)
    require_finite(probs, f"{card.name} ({model_dir})")  # (a NaN model had been given T = 20 and ECE 0)
    # the probabilities carry the card's temperature T0: times T0, their logs are the network's own logits (up to
    # a per-row constant), and T is fitted on those within LOG_T_RANGE directly. (A factor fitted on the scaled
    # ones and composed, T0 x factor, was clamped to the range of the factor: from T0 = 20 one run stopped at
    # 0.9958 without a word, and the same command again moved it to 0.9761.)
    logits = log_probabilities(probs) * card.temperature
    record = calibration_record(logits, labels)
    # "before" is the model as the card held it (with T0), what this run changes, as it was when T composed
    before = softmax_t(logits, card.temperature)
    record.update(nll_before=scaled_nll(logits, labels, card.temperature),
                  ece_before=expected_calibration_error(labels, before)[0])
    # a refit within REFIT_TOLERANCE of the stored temperature keeps it: calibrating twice is a no-op, where the
    # 5-decimal rounding of a refit moved it (0.97614 -> 0.97612), which withdrew the int8 check
    fitted = record["temperature"]
    if at_range_edge(fitted):
        lowest, highest = (math.exp(bound) for bound in LOG_T_RANGE)
        log.warning("temperature %.5f is at the edge of %.2g-%.2g, the range a working model's fit lies in: the "
                    "likelihood fell all the way there (a broken or barely trained model, or labels that are not "
                    "its classes?)", fitted, lowest, highest)
    if abs(fitted / card.temperature - 1) < REFIT_TOLERANCE:
        if card.calibration:  # already calibrated: the card's record stays
            log.info("temperature %.4f kept: already calibrated (a refit gives %.5f)", card.temperature, fitted)
            return card.calibration
        record["temperature"] = card.temperature
    record.update({"split": "validation", "data": str(data), "backend": f"{runner.session.name} fp32"})
    _drop_int8_check(card, record["temperature"])
    card.calibration = record
    card.metrics.setdefault("validation", {})["ece"] = record["ece_after"]
    card.save(model_dir)
    log.info("temperature %.4f: ECE %.4f -> %.4f (cross-fitted %.4f)", record["temperature"],
             record["ece_before"], record["ece_after"], record["ece_after_crossfit"])
    return record


def _require_the_validated_labels(card, val, data) -> None:
    """Refuse labels of the validation images that are not those the model was validated on (the card's
    class counts of its split, and where it records one, the digest of which galaxy has which label): a
    temperature fitted to flipped labels replaced a good one."""
    recorded = (card.split or {}).get("val_counts")
    given = {name: 0 for name in card.classes} | dict(Counter(card.classes[k] for k in val.labels))
    if recorded and {k: v for k, v in given.items() if v} != {k: v for k, v in recorded.items() if v}:
        raise UsageError(f"{data} labels the {len(val)} validation images of {card.name} {given}, and it was "
                         f"validated on {recorded}: calibrate with the labels it was trained on")
    digest = (card.split or {}).get("val_labels_sha256")
    if digest and labels_digest(val) != digest:
        raise UsageError(f"{data} labels the {len(val)} validation images of {card.name} otherwise than the labels "
                         "it was validated on (the same class counts, other galaxies in them): calibrate with the "
                         "labels it was trained on")


def _validation_probabilities(runner: Runner, val) -> tuple[np.ndarray, np.ndarray]:
    """float32 (N, K) probabilities of the validation images and their int labels (N,), matched by path.

    Raises:
        UsageError: an image that cannot be read (a temperature is fitted on the whole split).
    """
    failed, probs, label_of, labels = [], [], dict(zip(val.paths, val.labels)), []
    for result in runner.run((Item(p) for p in val.paths), failed.append):
        probs.append(result.probabilities)
        labels.extend(label_of[p] for p in result.paths)
    if failed:
        raise UsageError(f"validation images unreadable: {failed[0].path}: {failed[0].reason}")
    return np.concatenate(probs), np.array(labels)


def _drop_int8_check(card, temperature: float) -> None:
    """A new temperature makes a new int8 model (it is quantized with the temperature in its graph):
    the card's int8 check was of the old one, so it goes to `not_checked` until check-backends runs."""
    results = (card.backends or {}).get("results", {})
    if temperature == card.temperature or not ("onnxruntime-int8" in results
                                               or (card.backends or {}).get("int8_arithmetic")):
        return
    results.pop("onnxruntime-int8", None)
    card.backends.pop("int8_arithmetic", None)  # every arithmetic's check was of the old model
    card.backends.setdefault("not_checked", {})["onnxruntime-int8"] = (
        f"temperature refitted from {card.temperature:g} to {temperature:g}: the int8 model checked was quantized "
        "with the old one; run galaxy quantize (--ship) and check-backends")


def calibrate_model(config) -> dict:
    """`galaxy calibrate` (a CalibrateConfig)."""
    model_dir, card = resolve_model(config.model_dir)
    return calibrate(model_dir, card, config.data, label_column=config.label_column, path_column=config.path_column)
