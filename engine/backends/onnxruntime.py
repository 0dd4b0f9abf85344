"""ONNX Runtime backend, fp32, CPU (or CUDA when onnxruntime-gpu is installed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.artifacts import cache_dir, onnx_model
from galaxy.errors import ModelError
from galaxy.cores import usable_cores
from galaxy.evaluation.calibration import softmax
from galaxy.spec import INPUT_NAME, MAX_BATCH, OUTPUT_NAME

log = logging.getLogger(__name__)


class Session:
    """An ONNX Runtime session for one model.

    Attributes:
        name: backend name.
        device: the execution provider really in use (onnxruntime-gpu falls back silently).
        max_batch: the largest batch `run` accepts.
    """

    max_batch = MAX_BATCH

    def __init__(self, path, threads: int, name: str = "onnxruntime", precision: str = "fp32", spin_wait: bool = True):
        self.name, self.precision = name, precision
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or usable_cores()
        options.inter_op_num_threads = 1
        if not spin_wait:  # see BackendOptions.spin_wait
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self._session = ort.InferenceSession(str(path), options, providers=wanted)
        self.device = self._session.get_providers()[0]
        self.path = str(path)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> class probabilities float32 (N, K)."""
        logits = self._session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(tensor, np.float32)})[0]
        return softmax(logits)


def load(model_dir, card, options, parity_images=()) -> Session:
    """ONNX Runtime fp32 on the CPU (or the GPU with onnxruntime-gpu) of the model's ONNX file, exported
    into the cache on first use with `parity_images` for its check.

    Args:
        model_dir, card: the model; options: `BackendOptions` (threads, spin-waiting).

    Returns:
        A Session: `run(float32 (N, C, H, W)) -> float32 (N, K)` calibrated probabilities.
    """
    path = onnx_model(model_dir, card, parity_images)
    try:
        session = Session(path, options.threads, spin_wait=options.spin_wait)
    except Exception as exc:  # ONNX Runtime's own error types (InvalidProtobuf, Fail) share no base class
        damaged = type(exc).__name__ == "InvalidProtobuf" or "Protobuf parsing failed" in str(exc)
        if not damaged or not Path(path).resolve().is_relative_to(Path(cache_dir()).resolve()):
            raise ModelError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None
        # a file of the cache this package wrote whole, since damaged (a disk, a hand): built again; any
        # other failure (a provider, memory) leaves the cache as it is
        log.warning("the cached ONNX model %s cannot be parsed (%s); building it again", path, str(exc)[:200])
        Path(path).unlink()
        try:
            session = Session(onnx_model(model_dir, card, parity_images), options.threads, spin_wait=options.spin_wait)
        except Exception as again:
            raise ModelError(f"ONNX Runtime cannot load {path}, built again: {str(again).splitlines()[0]}") from None
    log.info("backend onnxruntime on %s (%s)", session.device, session.path)
    return session
