"""Static int8 quantisation (QDQ) of the ONNX model, calibrated on real training images.

Activations uint8 and weights int8 per channel (the VNNI/AMX-friendly U8S8 scheme), with
percentile calibration so a few bright pixels (stars, cores) do not stretch the ranges.
The result is cached beside the fp32 ONNX, keyed by the card's engine key (weights and temperature).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from engine.artifacts import cache_dir, onnx_model, resolve_model
from galaxy.card import validation_ids
from galaxy.errors import BackendUnavailable, UsageError
from galaxy.io.images import load_input
from galaxy.labels import load_labelled
from galaxy.votes import rule_from_config
from galaxy.spec import INPUT_NAME

log = logging.getLogger(__name__)

INT8_RECIPE = "qdq-u8s8-perchannel-percentile99.999-v1"


def int8_path(card) -> Path:
    return cache_dir() / "onnx" / f"{card.engine_key}-{INT8_RECIPE}.onnx"


def training_paths(model_dir, card, data, label_column="label", path_column="file", limit=256) -> list[str]:
    """Up to `limit` labelled images of `data` outside the model's validation split, shuffled."""
    labelled = load_labelled(data, card.classes, label_column, path_column,
                             rule_from_config(card.training.get("config", {})))
    val_ids = validation_ids(model_dir, card) or set()
    keep = [i for i in range(len(labelled)) if labelled.ids[i] not in val_ids]
    rng = np.random.default_rng(0)
    rng.shuffle(keep)
    return [labelled.paths[i] for i in keep[:limit]]


def calibration_tensors(paths, spec) -> np.ndarray:
    """Preprocessed calibration images, float32 (N, C, H, W), for int8 (ONNX Runtime or TensorRT)."""
    if len(paths) < 16:
        raise UsageError(f"need at least 16 calibration images, got {len(paths)}")
    return np.stack([load_input(p, spec)[0] for p in paths])


def quantize(model_dir, card, calibration_paths, out=None) -> Path:
    """Build the int8 model from `calibration_paths` (real training images); return its path."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tensors = calibration_tensors(calibration_paths, card.input_spec)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.array_split(tensors, max(1, len(tensors) // 16)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    fp32 = onnx_model(Path(model_dir), card)
    out = Path(out) if out else int8_path(card)
    out.parent.mkdir(parents=True, exist_ok=True)
    pre = out.with_name(f".{out.stem}.{os.getpid()}.pre.onnx")
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.onnx")
    started = time.time()
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": 99.999})
        tmp.replace(out)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    record = {"recipe": INT8_RECIPE, "calibration_images": len(calibration_paths),
              "weights_sha256": card.weights_sha256, "seconds": round(time.time() - started, 1)}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("built int8 model %s from %d calibration images", out, len(calibration_paths))
    return out


def require_int8(card) -> Path:
    path = int8_path(card)
    if not path.is_file():
        raise BackendUnavailable(
            f"no int8 model for {card.name} yet: build it once with "
            "`galaxy quantize MODEL_DIR --calibration LABELLED_DATA` (real training images)")
    return path


def quantize_model(config) -> str:
    """`galaxy quantize`: build the int8 model from real training images (a QuantizeConfig)."""
    model_dir, card = resolve_model(config.model_dir)
    paths = training_paths(model_dir, card, config.calibration, config.label_column, config.path_column,
                           config.images)
    return str(quantize(model_dir, card, paths))
