"""ONNX Runtime int8 backend: the static QDQ model built by `galaxy quantize` (its recipe is recorded)."""

from __future__ import annotations

import logging

from engine.backends.onnxruntime import Session
from engine.int8_models import model_fingerprint, require_int8
from engine.machine import int8_arithmetic
from galaxy.errors import ModelError

log = logging.getLogger(__name__)


def load(model_dir, card, options, parity_images=()) -> Session:
    """ONNX Runtime on the model's static int8 QDQ model (`engine.int8_models.require_int8`: the shipped
    recipe rebuilt into the cache on first use, or one `galaxy quantize` built).

    Returns:
        A Session: `run(float32 (N, C, H, W)) -> float32 (N, K)` probabilities, with `recipe` and
        `fingerprint` of the int8 model it runs and the CPU's int8 `arithmetic` (`engine.machine`).
    """
    del parity_images  # the int8 model is looked up in the cache by weights hash (or rebuilt from model_dir)
    recipe, path = require_int8(model_dir, card)
    try:
        session = Session(path, options.threads, name="onnxruntime-int8", precision="int8",
                          spin_wait=options.spin_wait)
    except Exception as exc:  # ONNX Runtime's own error types share no base class
        raise ModelError(f"ONNX Runtime cannot load the int8 model {path}: {str(exc).splitlines()[0]} (delete it: "
                         "the shipped recipe is built again on first use; one of `galaxy quantize`, by running "
                         "it again)") from None
    session.recipe = recipe  # check-backends records both: a check holds only for the model it ran
    session.fingerprint = model_fingerprint(path)
    session.arithmetic = int8_arithmetic()  # the CPU's: outputs differ between arithmetics (a run records it)
    log.info("backend onnxruntime-int8 on %s (%s)", session.device, session.path)
    return session
