"""ONNX Runtime int8 backend: the static QDQ model built by `galaxy quantize`."""

from __future__ import annotations

import logging

from engine.backends.onnxruntime import Session
from engine.quantize import require_int8

log = logging.getLogger(__name__)


def load(model_dir, card, options, parity_images=()) -> Session:
    del model_dir, parity_images  # the int8 model is looked up in the cache by weights hash
    session = Session(require_int8(card), options.threads, name="onnxruntime-int8", precision="int8")
    log.info("backend onnxruntime-int8 on %s (%s)", session.device, session.path)
    return session
