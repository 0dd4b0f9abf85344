"""JPEG decode on the GPU with torchvision's nvJPEG, for CUDA machines without DALI.

The reference preprocessing in torch on the device: decode (RGB) -> centre crop ->
antialiased bilinear resize -> (x - mean) / std, giving torch CUDA tensors (C, H, W). JPEGs
with 1 or 3 components go here; every other file, and every JPEG nvJPEG rejects, goes to
the reference reader, so a bad file gets the reference reader's reason.
"""

from __future__ import annotations

import logging

from engine.pipelines.base import ChunkedPipeline, Decoded, read_jpeg
from galaxy.errors import BackendUnavailable
from galaxy.spec import InputSpec

log = logging.getLogger(__name__)


class NvjpegPipeline(ChunkedPipeline):
    """Decodes `Item`s in chunks of `batch_size` on the GPU; yields `Decoded` in input order."""

    name = "nvjpeg"

    def __init__(self, spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32):
        import torch
        import torchvision.io

        if not torch.cuda.is_available():
            raise BackendUnavailable("the nvjpeg decoder needs an NVIDIA GPU; use --decoder reference on the CPU")
        self._torch, self._io = torch, torchvision.io
        self.spec, self.workers, self.depth, self.hdu, self.batch_size = spec, workers, depth, hdu, batch_size
        self._mean = torch.tensor(spec.mean, device="cuda").view(-1, 1, 1)
        self._std = torch.tensor(spec.std, device="cuda").view(-1, 1, 1)

    def _preprocess(self, image):
        """uint8 (3, H, W) on the GPU -> normalised float32 (3, size, size)."""
        torch, spec = self._torch, self.spec
        _, h, w = image.shape
        ch, cw = max(1, round(h * spec.crop_fraction)), max(1, round(w * spec.crop_fraction))
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = image[:, top:top + ch, left:left + cw].float().div_(255)[None]
        resized = torch.nn.functional.interpolate(crop, size=(spec.size, spec.size), mode="bilinear",
                                                  antialias=True, align_corners=False)[0]
        return (resized - self._mean) / self._std

    def _chunk(self, chunk) -> list[Decoded | None]:
        torch = self._torch
        encoded = [read_jpeg(item.path) for item in chunk]
        results: list[Decoded | None] = [None] * len(chunk)
        to_gpu = [k for k, data in enumerate(encoded) if data is not None]
        if to_gpu:
            try:
                images = self._io.decode_jpeg([torch.frombuffer(bytearray(encoded[k]), dtype=torch.uint8)
                                               for k in to_gpu], mode=self._io.ImageReadMode.RGB, device="cuda")
                for k, image in zip(to_gpu, images):
                    item = chunk[k]
                    results[k] = Decoded.of(item, tensor=self._preprocess(image))
            except RuntimeError as exc:  # one bad JPEG fails the batched decode
                log.debug("nvJPEG rejected a batch (%s); the reference reader retries it", exc)
        return results


def create(spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32) -> NvjpegPipeline:
    return NvjpegPipeline(spec, workers, depth, hdu, batch_size)
