"""PyTorch CPU backend compiled with TorchInductor: bf16 autocast, channels_last, one static batch.

`torch.compile` fuses the network's convolutions, batch norms and activations into generated
C++/oneDNN kernels; on the project's 2-core AMX Xeon this ran the default model 1.6-1.8x faster
than eager bf16 in the same process. Shapes are kept static (every batch is padded to
`options.batch_size` and the padding rows dropped) so the graph compiles once. The first load
in a fresh environment compiles for ~50 s on 2 cores; Inductor's on-disk cache makes later
processes start in a few seconds.
"""

from __future__ import annotations

import logging

from engine.backends.torch_cpu import Session as EagerSession

log = logging.getLogger(__name__)


class Session(EagerSession):
    """The torch backend's network behind `torch.compile`, run on a fixed batch size."""

    name = "torch-compile"

    def __init__(self, model_dir, card, threads: int, batch: int):
        super().__init__(model_dir, card, threads)
        torch = self._torch
        self.max_batch = batch
        # Inductor looks for a CUDA toolkit even when it compiles for the CPU, and warns once that
        # there is none: nothing a CPU run acts on (it printed past -q)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        self._compiled = torch.compile(self._network, dynamic=False)
        spec = card.input_spec
        self.run(torch.zeros((batch, spec.channels, spec.size, spec.size)).numpy())  # compile now, not mid-run

    def run(self, tensor):
        """As the eager session, in chunks of the static batch."""
        import numpy as np

        step = self.max_batch
        return np.concatenate([EagerSession.run(self, tensor[i:i + step]) for i in range(0, len(tensor), step)])

    def _forward(self, x):
        n = x.shape[0]
        if n < self.max_batch:
            x = self._torch.cat([x, x.new_zeros((self.max_batch - n, *x.shape[1:]))]).contiguous(
                memory_format=self._torch.channels_last)
        return self._compiled(x)[:n]


def load(model_dir, card, options, parity_images=()) -> Session:
    """The timm network compiled by torch.compile for the CPU (bf16 where native), at a static batch
    of `options.batch_size`.

    Returns:
        A Session: `run(float32 (N, C, H, W)) -> float32 (N, K)` probabilities.
    """
    del parity_images  # runs the weights directly
    session = Session(model_dir, card, options.threads, options.batch_size)
    log.info("backend torch-compile %s on the CPU (static batch %d)", session.precision, session.max_batch)
    return session
