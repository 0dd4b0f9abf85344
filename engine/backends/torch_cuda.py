"""PyTorch CUDA backend, for GPUs without TensorRT: fp16, channels_last, one CUDA graph.

The network runs in half precision on a static batch (`options.batch_size`) captured once
as a CUDA graph, so each batch is one graph replay instead of hundreds of kernel launches;
a short batch is padded into the static input and its padding rows are dropped. Batches
already on the GPU (torch CUDA tensors from the DALI GPU or nvJPEG pipelines) are copied
device to device; numpy batches are uploaded once.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from galaxy.errors import BackendUnavailable

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    from engine.machine import nvidia_driver_absent

    if nvidia_driver_absent():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class Session:
    """A timm network captured as a CUDA graph.

    Attributes:
        name: "torch-cuda".
        precision: "fp16".
        device: the GPU, e.g. "cuda:0 NVIDIA H100 80GB HBM3".
        max_batch: the static batch of the graph.
    """

    name = "torch-cuda"
    precision = "fp16"
    accepts_device_tensors = True

    def __init__(self, model_dir, card, batch: int, graphs: bool = True):
        import torch

        from galaxy.training.model import load_network

        if not torch.cuda.is_available():
            raise BackendUnavailable("the torch-cuda backend needs an NVIDIA GPU visible to PyTorch; none is here")
        self._torch = torch
        torch.backends.cudnn.benchmark = True  # one static shape: let cuDNN time its kernels once
        network, _ = load_network(model_dir, card)
        self._network = network.to("cuda", torch.float16).to(memory_format=torch.channels_last).eval()
        spec = card.input_spec
        self.max_batch = batch
        self.device = f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
        self._input = torch.zeros((batch, spec.channels, spec.size, spec.size), device="cuda",
                                  dtype=torch.float16).contiguous(memory_format=torch.channels_last)
        self._graph = None
        self._lock = threading.Lock()  # the API's threads may share a session (the Runner runs one stream)
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the graph (cuDNN picks its kernels)
                for _ in range(3):
                    self._output = self._network(self._input)
            torch.cuda.current_stream().wait_stream(side)
            if graphs:
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph):
                    self._output = self._network(self._input)

    def _forward(self, x):
        n = x.shape[0]
        self._input[:n].copy_(x, non_blocking=True)
        if self._graph is not None:
            self._graph.replay()
            return self._output[:n]
        return self._network(self._input)[:n]

    def run(self, tensor) -> np.ndarray:
        """float32 (N, C, H, W), numpy or a torch CUDA tensor -> probabilities float32 (N, K)."""
        torch = self._torch
        x = tensor if isinstance(tensor, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(tensor))
        out = []
        with self._lock, torch.inference_mode():  # one static input/output buffer: one caller at a time
            for start in range(0, x.shape[0], self.max_batch):
                chunk = x[start:start + self.max_batch].to("cuda", non_blocking=True)
                out.append(torch.softmax(self._forward(chunk).float(), dim=1).cpu())
        return torch.cat(out).numpy()


def load(model_dir, card, options, parity_images=()) -> Session:
    """The timm network in fp16 on a CUDA GPU, captured as a CUDA graph at batch `options.batch_size`.

    Returns:
        A Session: `run(float32 (N, C, H, W), numpy or torch CUDA) -> float32 (N, K)` probabilities.
    """
    del parity_images  # runs the weights directly
    session = Session(model_dir, card, options.batch_size)
    log.info("backend torch-cuda fp16 (CUDA graph, batch %d) on %s", session.max_batch, session.device)
    return session
