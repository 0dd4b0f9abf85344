"""TensorRT backend: a cached plan (`engine.tensorrt_build`) run with `execute_async_v3`.

Device memory is PyTorch's (no pycuda): a batch already on the GPU (a torch CUDA tensor from
the DALI GPU or nvJPEG pipelines) is bound by pointer with no host copy; a numpy batch is
uploaded once. Only the (N, K) logits come back to the host.
"""

from __future__ import annotations

import logging

import numpy as np

from engine.tensorrt_build import build_plan, check_plan, current_target, import_tensorrt, read_plan
from galaxy.errors import BackendError, BackendUnavailable, ModelError
from galaxy.spec import INPUT_NAME, MAX_BATCH, OUTPUT_NAME

log = logging.getLogger(__name__)


class Session:
    """One TensorRT execution context on one CUDA stream.

    Attributes:
        name: "tensorrt" or "tensorrt-int8".
        precision: "fp16" or "int8".
        device: the GPU, e.g. "cuda:0 NVIDIA H100 80GB HBM3".
        max_batch: the optimization profile's largest batch.
    """

    max_batch = MAX_BATCH
    accepts_device_tensors = True

    def __init__(self, plan_path, card, precision: str):
        import torch

        trt = import_tensorrt()
        target = current_target()
        record = plan_path.with_suffix(".json")
        if not record.is_file():  # what the plan was built from and for is not known: it is not trusted
            raise ModelError(f"{plan_path} has no record {record.name} of what it was built from; rebuild it with "
                             "galaxy compile --force")
        built, plan = read_plan(plan_path)
        check_plan(built, card, target, plan_path)
        if plan is None:  # TensorRT may crash on a damaged plan rather than refuse it
            raise ModelError(f"TensorRT plan {plan_path} is not the file that was built (its sha256 is not the one "
                             f"{record.name} records); rebuild it with galaxy compile --force")
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelError(f"TensorRT could not load {plan_path}; rebuild it with galaxy compile --force")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._classes = len(card.classes)
        self.precision = precision
        self.name = "tensorrt" if precision == "fp16" else "tensorrt-int8"
        self.device = f"cuda:{torch.cuda.current_device()} {target.gpu}"
        self.path = str(plan_path)

    def run(self, tensor) -> np.ndarray:
        """float32 (N, C, H, W), numpy or a torch CUDA tensor -> probabilities float32 (N, K)."""
        torch = self._torch
        # a CUDA batch may still be being written on the stream that made it (torch.stack in batching,
        # torch.cat in TTA): this stream waits for it before TensorRT reads it
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            x = tensor if isinstance(tensor, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(tensor))
            x = x.to("cuda", torch.float32, non_blocking=True).contiguous()
            x.record_stream(self._stream)  # its memory is not reused before this stream is done with it
            logits = torch.empty((x.shape[0], self._classes), device="cuda", dtype=torch.float32)
            if not self._context.set_input_shape(INPUT_NAME, tuple(x.shape)):
                raise BackendError(f"TensorRT refused a batch of shape {tuple(x.shape)} (its optimisation profile "
                                   "allows batches of 1 to MAX_BATCH)")
            self._context.set_tensor_address(INPUT_NAME, x.data_ptr())
            self._context.set_tensor_address(OUTPUT_NAME, logits.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise BackendError(f"TensorRT execution failed for a batch of {x.shape[0]}")
            probabilities = torch.softmax(logits, dim=1).cpu()  # synchronises the stream
        return probabilities.numpy()


def load(model_dir, card, options, parity_images=(), precision: str = "fp16") -> Session:
    """A TensorRT engine of the model's ONNX file (built on first use into the cache, per GPU and
    TensorRT version) in `precision` "fp16" or "int8".

    Returns:
        A Session: `run(float32 (N, C, H, W), numpy or torch CUDA) -> float32 (N, K)` probabilities.

    Raises:
        BackendUnavailable: no CUDA GPU, or TensorRT is not installed.
    """
    del parity_images  # the ONNX it is built from passed its parity check
    from engine.backends.torch_cuda import cuda_available

    if not cuda_available():  # said first: the install hint (or torch-cuda) cannot help without a GPU
        raise BackendUnavailable("TensorRT runs on an NVIDIA GPU, and none is visible here: on a CPU use "
                                 "--backend auto (or onnxruntime)")
    if precision == "int8":
        from engine.tensorrt_build import plan_path

        path = plan_path(card, "int8", current_target())
        if not path.is_file():
            raise BackendUnavailable(f"no TensorRT INT8 engine for {card.name} on this GPU yet: build it once with "
                                     "galaxy compile MODEL_DIR --precision int8 --calibration LABELLED_DATA")
    else:
        path = build_plan(model_dir, card, "fp16")
    session = Session(path, card, precision)
    log.info("backend %s on %s (%s)", session.name, session.device, session.path)
    return session


