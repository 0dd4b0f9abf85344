"""Decode pipelines: a stream of `Item`s in, a stream of `Decoded` out, in input order.

Each pipeline module has `create(spec, workers, depth, hdu, batch_size) -> Pipeline` where
`Pipeline.decode(items)` yields `Decoded` (tensor or error) for every item, in order.
  reference  the reference reader (PIL / astropy) in a thread pool; runs everywhere;
  dali       NVIDIA DALI decodes JPEGs (libjpeg-turbo on the CPU), the reference reader
             takes everything else and every file DALI rejects.
`auto` is dali where nvidia-dali is installed, else reference.
"""

from __future__ import annotations

import importlib
import importlib.util

from galaxy.errors import BackendUnavailable, UsageError

PIPELINES = {
    "reference": "engine.pipelines.reference",
    "dali": "engine.pipelines.dali",
}


def dali_installed() -> bool:
    return importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.dali") is not None


def pick(name: str) -> str:
    """The pipeline a name means on this machine."""
    if name == "auto":
        return "dali" if dali_installed() else "reference"
    if name not in PIPELINES:
        raise UsageError(f"unknown decoder {name!r}; choose from {['auto', *PIPELINES]}")
    if name == "dali" and not dali_installed():
        raise BackendUnavailable("the DALI decoder needs NVIDIA DALI: pip install nvidia-dali-cuda130 "
                                 "(or the wheel matching your CUDA)")
    return name


def open_pipeline(name: str, spec, workers: int, depth: int, hdu=None, batch_size: int = 32):
    """Open decode pipeline `name` ("auto", "reference" or "dali")."""
    return importlib.import_module(PIPELINES[pick(name)]).create(spec, workers, depth, hdu, batch_size)
