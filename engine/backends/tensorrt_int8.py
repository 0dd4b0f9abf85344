"""TensorRT INT8 backend: the entropy-calibrated plan built by `galaxy compile --precision int8`."""

from __future__ import annotations

from engine.backends import tensorrt


def load(model_dir, card, options, parity_images=()) -> tensorrt.Session:
    """TensorRT with INT8 calibration (`engine.backends.tensorrt.load` at precision "int8")."""
    return tensorrt.load(model_dir, card, options, parity_images, precision="int8")
