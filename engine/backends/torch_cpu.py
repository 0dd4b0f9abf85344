"""PyTorch backend: bf16 autocast and channels_last where the CPU has bf16 (AMX, AVX512-BF16).

Without native bf16 it runs fp32 and says so in `precision`.
"""

from __future__ import annotations

import logging

import numpy as np

from engine.machine import native_bf16
from galaxy.cores import cpu_quota, usable_cores
from galaxy.spec import MAX_BATCH

log = logging.getLogger(__name__)


class Session:
    """A timm network in inference mode.

    Attributes:
        name: backend name.
        precision: "bf16" (autocast) or "fp32".
        device: "cpu".
        max_batch: the largest batch `run` accepts.
    """

    name = "torch"
    device = "cpu"
    max_batch = MAX_BATCH

    def __init__(self, model_dir, card, threads: int, bf16: bool | None = None):
        import torch

        from galaxy.training.model import load_network

        # 0 leaves torch its own count (one per physical core), except under a CPU quota, which torch
        # does not see: then the quota's cores
        self._threads = threads or (usable_cores() if cpu_quota() else 0)
        self._torch = torch
        network, _ = load_network(model_dir, card)
        self._network = network.to(memory_format=torch.channels_last).eval()
        self._bf16 = native_bf16() if bf16 is None else bf16
        self.precision = "bf16" if self._bf16 else "fp32"

    def _forward(self, x):
        return self._network(x)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> class probabilities float32 (N, K)."""
        torch = self._torch
        previous = torch.get_num_threads()
        if self._threads and previous != self._threads:
            # set for this call and put back: in the main thread the count is every new thread's
            # default, and the rest of the process (other sessions, the benchmark's baseline) keeps its own
            torch.set_num_threads(self._threads)
        try:
            x = torch.from_numpy(np.ascontiguousarray(tensor, np.float32)).contiguous(
                memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16):
                logits = self._forward(x)
            return torch.softmax(logits.float(), dim=1).numpy()
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)


def load(model_dir, card, options, parity_images=()) -> Session:
    """The timm network in eager PyTorch on the CPU: bf16 autocast where the CPU has native bf16.

    Returns:
        A Session: `run(float32 (N, C, H, W)) -> float32 (N, K)` probabilities.
    """
    del parity_images  # runs the weights directly
    session = Session(model_dir, card, options.threads)
    log.info("backend torch %s on the CPU", session.precision)
    return session
