"""DALI on the GPU: nvJPEG decode, resize and normalise in device memory (see `engine.pipelines.dali`)."""

from __future__ import annotations

from engine.pipelines.dali import DaliPipeline
from galaxy.errors import BackendUnavailable
from galaxy.spec import InputSpec


def create(spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32) -> DaliPipeline:
    """The DALI pipeline decoding on the GPU (nvJPEG) into CUDA memory; batches are torch CUDA tensors.

    Raises:
        BackendUnavailable: no CUDA GPU.
    """
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("the dali-gpu decoder needs an NVIDIA GPU; use --decoder dali on the CPU")
    return DaliPipeline(spec, workers, depth, hdu, batch_size, device_id=torch.cuda.current_device())
