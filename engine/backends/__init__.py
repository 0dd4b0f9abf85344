"""Inference backends behind one small surface.

Each backend module has `load(model_dir, card, options) -> Session`; a Session has
`run(tensor) -> probabilities` (float32 (N, K) from float32 (N, C, H, W)), `max_batch`,
`name` and `device` (what really runs it). Optional heavy imports happen inside `load`.
GPU sessions (`accepts_device_tensors`) also take torch CUDA tensors, with no host copy.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass

from galaxy.errors import UsageError

log = logging.getLogger(__name__)

# name -> module implementing load(); "auto" is resolved by `pick`.
BACKENDS = {
    "onnxruntime": "engine.backends.onnxruntime",
    "onnxruntime-int8": "engine.backends.onnxruntime_int8",
    "torch": "engine.backends.torch_cpu",
    "torch-compile": "engine.backends.torch_compiled",
    "torch-cuda": "engine.backends.torch_cuda",
    "tensorrt": "engine.backends.tensorrt",
    "tensorrt-int8": "engine.backends.tensorrt_int8",
}
GPU_BACKENDS = ("tensorrt", "tensorrt-int8", "torch-cuda")
# Given only when asked for by name: torch-compile compiles for ~50 s on a cold cache for a
# 1.1-1.5x gain measured here, worth it for a survey, not for a folder of samples.
OPT_IN = ("torch-compile",)


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend understands."""

    threads: int = 0
    batch_size: int = 32


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def available(name: str, card) -> bool:
    """Whether backend `name` can run here in the form that was checked."""
    if name in GPU_BACKENDS:
        from engine.backends.torch_cuda import cuda_available

        if not cuda_available():
            return False
        if name == "tensorrt-int8":
            return False  # offered only when asked for by name: INT8 is checked per model, not assumed
        return name == "torch-cuda" or tensorrt_installed()
    if name in ("torch", "torch-compile"):
        from engine.backends.torch_cpu import native_bf16

        return native_bf16()
    if name == "onnxruntime-int8":
        from engine.quantize import int8_path

        return int8_path(card).is_file()
    return name in BACKENDS


def pick(name: str, card=None) -> str:
    """The backend a name means.

    `auto` on a machine with an NVIDIA GPU: TensorRT fp16 where TensorRT is installed, else
    PyTorch CUDA fp16. On a CPU it is measured, not guessed: among the backends that passed
    their check against fp32 on the validation split (the card's `backends` record) and can
    run here, the one with the highest measured engine speed; ONNX Runtime fp32 when none did.
    """
    if name == "auto":
        gpu = next((n for n in GPU_BACKENDS if available(n, card)), None)
        if gpu:
            log.info("backend auto -> %s (an NVIDIA GPU is present)", gpu)
            return gpu
        results = (card.backends if card else {}).get("results", {})
        ranked = sorted((rec.get("images_per_s", 0.0), n) for n, rec in results.items()
                        if rec.get("passed") and n in BACKENDS and n not in GPU_BACKENDS + OPT_IN
                        and available(n, card))
        chosen = ranked[-1][1] if ranked else "onnxruntime"
        log.info("backend auto -> %s (%s)", chosen, f"{ranked[-1][0]:.0f} img/s measured on the validation split"
                 if ranked else "no checked backend in the card")
        return chosen
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose from {['auto', *BACKENDS]}")
    return name


def load(name: str, model_dir, card, options: BackendOptions, parity_images=()):
    """Load backend `name` (or `auto`) for a model; returns its Session."""
    module = importlib.import_module(BACKENDS[pick(name, card)])
    return module.load(model_dir, card, options, parity_images)
