"""Decode pipelines: a stream of `Item`s in, a stream of `Decoded` out, in input order.

Each pipeline module has `create(spec, workers, depth, hdu, batch_size) -> Pipeline` where
`Pipeline.decode(items)` yields `Decoded` (tensor or error) for every item, in order.
  reference  the reference reader (PIL / astropy) in a thread pool; runs everywhere;
  dali       NVIDIA DALI decodes JPEGs (libjpeg-turbo on the CPU), the reference reader
             takes everything else and every file DALI rejects.
  dali-gpu   DALI with nvJPEG on the GPU; batches stay on the device (torch CUDA tensors);
  nvjpeg     torchvision's GPU JPEG decoder, for CUDA machines without DALI.
`auto`: for a GPU backend dali-gpu (or nvjpeg without DALI); on the CPU dali where
nvidia-dali is installed, else reference.
"""

from __future__ import annotations

import importlib
import importlib.util

from galaxy.errors import BackendUnavailable, UsageError

PIPELINES = {
    "reference": "engine.pipelines.reference",
    "dali": "engine.pipelines.dali",
    "dali-gpu": "engine.pipelines.dali_gpu",
    "nvjpeg": "engine.pipelines.nvjpeg",
}

GPU_PIPELINES = ("dali-gpu", "nvjpeg")


def dali_installed() -> bool:
    return importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.dali") is not None


def require_known(name: str) -> None:
    """Refuse a decoder name that is neither `auto` nor a pipeline (also before a `--ray` run starts
    its actors, which would each fail on it)."""
    if name != "auto" and name not in PIPELINES:
        raise UsageError(f"unknown decoder {name!r}; choose from {['auto', *PIPELINES]}")


def pick(name: str, device: str = "cpu") -> str:
    """The pipeline a name means on this machine, for a backend running on `device`."""
    require_known(name)
    if name == "auto":
        if device.startswith("cuda"):  # decode straight into the GPU the backend runs on
            return "dali-gpu" if dali_installed() else "nvjpeg"
        return "dali" if dali_installed() else "reference"
    if name in GPU_PIPELINES and not device.startswith("cuda"):
        raise UsageError(f"decoder {name!r} leaves images on the GPU; use it with a GPU backend "
                         "(--backend tensorrt or torch-cuda)")
    if name in ("dali", "dali-gpu") and not dali_installed():
        raise BackendUnavailable("the DALI decoder needs NVIDIA DALI: pip install nvidia-dali-cuda130 "
                                 "(or the wheel matching your CUDA)")
    return name


def open_pipeline(name: str, spec, workers: int, depth: int, hdu=None, batch_size: int = 32, device: str = "cpu"):
    """Open decode pipeline `name` ("auto" or a key of PIPELINES) for a backend on `device`."""
    return importlib.import_module(PIPELINES[pick(name, device)]).create(spec, workers, depth, hdu, batch_size)
