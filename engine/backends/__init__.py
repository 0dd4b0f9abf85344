"""Inference backends behind one small surface.

Each backend module has `load(model_dir, card, options) -> Session`; a Session has
`run(tensor) -> probabilities` (float32 (N, K) from float32 (N, C, H, W)), `max_batch`,
`name` and `device` (what really runs it). Optional heavy imports happen inside `load`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from galaxy.errors import UsageError

# name -> module implementing load(); "auto" is resolved by `pick`.
BACKENDS = {
    "onnxruntime": "engine.backends.onnxruntime",
}


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend understands."""

    threads: int = 0
    batch_size: int = 32


def pick(name: str) -> str:
    """The backend a name means; `auto` is the fastest available on this machine."""
    if name == "auto":
        return "onnxruntime"
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose from {['auto', *BACKENDS]}")
    return name


def load(name: str, model_dir, card, options: BackendOptions, parity_images=()):
    """Load backend `name` for a model; returns its Session."""
    module = importlib.import_module(BACKENDS[pick(name)])
    return module.load(model_dir, card, options, parity_images)
