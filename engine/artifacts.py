"""The model folder and the ONNX file every other engine derives from, built on first use and cached.

(The int8 model is built by engine/quantize.py and TensorRT plans by engine/tensorrt_build.py,
both from this ONNX file and cached beside it under `cache_dir()`.)

Only the weights and card are shipped. An ONNX file is looked for, in order:
  1. MODEL_DIR/model.onnx written by `galaxy export`, if the card's export record matches
     both the card's engine key (weights, classes, temperature) and the file's own hash;
  2. the cache: $GALAXY_CACHE (default ~/.cache/galaxy) / onnx / <card.engine_key>
     -opset<N>-torch<version>.onnx, built (with the parity check) when missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from galaxy.card import ONNX_FILE, ModelCard, default_model_dir, file_sha256, load_card, model_path
from galaxy.config import cache_dir  # noqa: F401 (engine modules import it from here)
from galaxy.errors import ModelError

log = logging.getLogger(__name__)


def resolve_model(model_dir=None) -> tuple[Path, ModelCard]:
    """The model directory (a folder or a shipped model's name; default: the shipped default) and its verified card."""
    path = model_path(model_dir) if model_dir else default_model_dir()
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    return path, load_card(path)


def onnx_model(model_dir: Path, card: ModelCard, parity_images=()) -> Path:
    """Path of an ONNX file for these weights, exporting into the cache if needed."""
    local = model_dir / ONNX_FILE
    record = card.export or {}
    if (local.is_file() and record.get("engine_key") == card.engine_key
            and record.get("sha256") == file_sha256(local)):
        return local
    from engine.machine import installed_version
    from galaxy.card import ONNX_OPSET

    # torch's version from its metadata: a cached engine is found without importing torch (seconds)
    cached = cache_dir() / "onnx" / f"{card.engine_key}-opset{ONNX_OPSET}-torch{installed_version('torch')}.onnx"
    if not cached.is_file():
        from galaxy.training.export import export_onnx

        log.info("building the ONNX engine for %s into %s (once)", card.name, cached)
        try:
            export_onnx(model_dir, cached, parity_images, card=card)
        except OSError as exc:
            raise ModelError(f"cannot write the ONNX cache {cached}: {exc}; set GALAXY_CACHE") from None
    return cached
