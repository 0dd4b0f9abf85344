"""`galaxy calibrate`: fit the temperature on the model's validation split and store it in the card.

The fit itself (Guo et al. 2017) is galaxy/evaluation/calibration.py; this module runs the network on the
validation images (ONNX Runtime fp32, through the one Runner every classifying command uses) to get the
probabilities it is fitted on.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np

from engine.artifacts import resolve_model
from engine.listing import Item
from engine.runner import Runner
from galaxy.errors import UsageError
from galaxy.evaluation.calibration import LOG_T_RANGE, calibration_record, log_probabilities, scaled_nll, softmax_t
from galaxy.evaluation.metrics import expected_calibration_error
from galaxy.labels import validation_split

log = logging.getLogger(__name__)

REFIT_TOLERANCE = 1e-3  # a refit factor this close to 1 leaves the stored temperature as it is


def calibrate(model_dir, card, data, batch=32, label_column="label", path_column="file") -> dict:
    """Fit the temperature on the validation split with ONNX Runtime fp32; store it in the card.

    The probabilities already carry the card's current temperature T0, so log p = logits / T0
    + c and the fitted T' composes: the new temperature is T0 * T'. Calibrating twice is a
    no-op (T' within REFIT_TOLERANCE of 1 keeps T0). Changing T changes the engine key: derived
    engines are rebuilt on next use.
    """
    val = validation_split(model_dir, card, data, label_column, path_column)
    _require_the_validated_labels(card, val, data)
    runner = Runner(model_dir, card, "onnxruntime", batch_size=batch)
    probs, labels = _validation_probabilities(runner, val)
    record = calibration_record(log_probabilities(probs), labels)
    # a refit within REFIT_TOLERANCE of 1 keeps the temperature: calibrating twice is a no-op, where the
    # 5-decimal rounding of a refit moved it (0.97614 -> 0.97612), which withdrew the int8 check
    factor = record["temperature"]
    if abs(factor - 1) < REFIT_TOLERANCE and card.calibration:  # already calibrated: the card's record
        # (its "before" figures are of the raw model; this refit's are of the calibrated one) stays
        log.info("temperature %.4f kept: already calibrated (a refit moves it by a factor %.5f); ECE %.4f",
                 card.temperature, factor, record["ece_before"])
        return card.calibration
    record["temperature"] = card.temperature if abs(factor - 1) < REFIT_TOLERANCE else round(card.temperature * factor, 5)
    lowest, highest = (round(math.exp(bound), 5) for bound in LOG_T_RANGE)
    if not lowest <= record["temperature"] <= highest:  # the fit's own range, which composing can leave
        held = min(max(record["temperature"], lowest), highest)
        log.warning("temperature %.5f is outside %.2g-%.2g, the range a working model's fit lies in: %g kept (a "
                    "broken or barely trained model?)", record["temperature"], lowest, highest, held)
        record = _held_at(record, held, card.temperature, probs, labels)
    record.update({"split": "validation", "data": str(data), "backend": f"{runner.session.name} fp32"})
    _drop_int8_check(card, record["temperature"])
    card.calibration = record
    card.metrics.setdefault("validation", {})["ece"] = record["ece_after"]
    card.save(model_dir)
    log.info("temperature %.4f: ECE %.4f -> %.4f (cross-fitted %.4f)", record["temperature"],
             record["ece_before"], record["ece_after"], record["ece_after_crossfit"])
    return record


def _held_at(record: dict, temperature: float, current: float, probs, labels) -> dict:
    """`record` with its temperature held at `temperature` and the figures after scaling measured there
    (not at the fit the range refused); nothing is fitted at a bound, so its ECE is also the honest one."""
    factor = temperature / current  # the probabilities carry the current temperature
    log_p = log_probabilities(probs)
    ece = expected_calibration_error(labels, softmax_t(log_p, factor))[0]
    return {**record, "temperature": temperature, "nll_after": scaled_nll(log_p, labels, factor), "ece_after": ece,
            "ece_after_crossfit": ece}


def _require_the_validated_labels(card, val, data) -> None:
    """Refuse labels of the validation images that are not those the model was validated on (the card's
    class counts of its split): a temperature fitted to flipped labels replaced a good one."""
    recorded = (card.split or {}).get("val_counts")
    given = {name: 0 for name in card.classes} | dict(Counter(card.classes[k] for k in val.labels))
    if recorded and {k: v for k, v in given.items() if v} != {k: v for k, v in recorded.items() if v}:
        raise UsageError(f"{data} labels the {len(val)} validation images of {card.name} {given}, and it was "
                         f"validated on {recorded}: calibrate with the labels it was trained on")


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
    if temperature == card.temperature or "onnxruntime-int8" not in results:
        return
    del results["onnxruntime-int8"]
    card.backends.setdefault("not_checked", {})["onnxruntime-int8"] = (
        f"temperature refitted from {card.temperature:g} to {temperature:g}: the int8 model checked was quantized "
        "with the old one; run galaxy quantize (--ship) and check-backends")


def calibrate_model(config) -> dict:
    """`galaxy calibrate` (a CalibrateConfig)."""
    model_dir, card = resolve_model(config.model_dir)
    return calibrate(model_dir, card, config.data, label_column=config.label_column, path_column=config.path_column)
