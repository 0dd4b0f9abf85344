"""JPEG decode on the GPU with torchvision's nvJPEG, for CUDA machines without DALI.

The reference preprocessing in torch on the device: decode (RGB) -> the reference reader's centre
crop and antialiased bilinear resize, as two matrix products -> (x - mean) / std, giving torch
CUDA tensors (C, H, W); images of one shape are cropped and resized as one batch. Square JPEGs with
1 or 3 components go here; every other file, and every JPEG nvJPEG rejects, goes to the reference
reader, so a bad file gets the reference reader's reason. (`device="cpu"` runs the same graph with
libjpeg-turbo: the tests check the arithmetic that way on machines without a GPU.)
"""

from __future__ import annotations

import logging
from collections import defaultdict

from engine.pipelines.base import ChunkedPipeline, Decoded, blank_samples, read_jpeg
from galaxy.errors import BackendUnavailable
from galaxy.spec import InputSpec

log = logging.getLogger(__name__)


class NvjpegPipeline(ChunkedPipeline):
    """Decodes `Item`s in chunks of `batch_size` on the GPU; yields `Decoded` in input order."""

    name = "nvjpeg"

    def __init__(self, spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32,
                 device: str = "cuda"):
        import torch
        import torchvision.io

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("the nvjpeg decoder needs an NVIDIA GPU; use --decoder reference on the CPU")
        self._torch, self._io = torch, torchvision.io
        self.spec, self.workers, self.depth, self.hdu, self.batch_size = spec, workers, depth, hdu, batch_size
        self.device = device
        self._mean = torch.tensor(spec.mean, device=device).view(-1, 1, 1)
        self._std = torch.tensor(spec.std, device=device).view(-1, 1, 1)
        self._weights = {}  # (height, width) -> the resampling matrices on the device

    def _preprocess(self, images):
        """uint8 (N, 3, H, W) on the GPU, one shape -> normalised float32 (N, 3, size, size).

        The reference reader's crop and resize as two matrix products (`resample_weights`): its sub-pixel
        box, PIL's filter. (A whole-pixel crop and torch's antialiased resize had moved p_spiral by up to
        0.03 on gz1-sdss cutouts.)"""
        torch, spec = self._torch, self.spec
        h, w = images.shape[-2:]
        if (h, w) not in self._weights:
            from galaxy.io.images import resample_weights

            # only the band of rows and columns the filter reads is turned to floats (a 4,096 px cutout whole
            # would be 200 MB a image on the device)
            bands = []
            for weights in resample_weights(h, w, spec.crop_fraction, spec.size):
                used = weights.any(axis=0).nonzero()[0]
                first, last = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, weights.shape[1])
                bands.append((torch.from_numpy(weights[:, first:last].copy()).to(self.device), slice(first, last)))
            self._weights[h, w] = bands
        (rows, row_band), (columns, column_band) = self._weights[h, w]
        pixels = images[:, :, row_band, column_band].float().div_(255)
        resized = torch.matmul(rows, torch.matmul(pixels, columns.T))  # along each row first, as PIL
        return (resized - self._mean) / self._std

    def _chunk(self, chunk) -> list[Decoded | None]:
        torch = self._torch
        encoded = [read_jpeg(item.path) for item in chunk]
        results: list[Decoded | None] = [None] * len(chunk)
        to_gpu = [k for k, data in enumerate(encoded) if data is not None]
        if to_gpu:
            try:
                data = [torch.frombuffer(bytearray(encoded[k]), dtype=torch.uint8) for k in to_gpu]
                images = self._io.decode_jpeg(data, mode=self._io.ImageReadMode.RGB, device=self.device)
                shapes = defaultdict(list)  # a survey's cutouts share one shape: one resize per batch
                for k, image in zip(to_gpu, images):
                    shapes[tuple(image.shape)].append((k, image))
                for group in shapes.values():
                    batch = torch.stack([image for _, image in group])
                    tensors = self._preprocess(batch)
                    # blank as the reference reader judges it, on the crop's whole pixels: the resize's taps
                    # reach past a one-valued crop, so the tensor alone had let such a cutout through
                    flat = _crop_pixels(batch, self.spec.crop_fraction)
                    constant = ((flat.amax(dim=2) == flat.amin(dim=2)).all(dim=1).tolist() if flat.shape[2]
                                else [False] * len(group))
                    for (k, _), tensor, blank, same in zip(group, tensors, blank_samples(tensors), constant):
                        blank = blank or same
                        if not blank:  # a blank one: the reference reader refuses it, with its reason
                            results[k] = Decoded.of(chunk[k], tensor=tensor)
            except RuntimeError as exc:  # one bad JPEG fails the batched decode
                log.debug("nvJPEG rejected a batch (%s); the reference reader retries it", exc)
        return results


def _crop_pixels(batch, crop_fraction):
    """uint8 (N, C, H, W) -> (N, C, P): the whole pixels of the crop `blank_reason` judges (`crop_spans`)."""
    from galaxy.io.composite import crop_spans

    (top, bottom), (left, right) = crop_spans(batch.shape[-2], batch.shape[-1], crop_fraction)
    window = batch[:, :, top:bottom, left:right]
    return window.reshape(window.shape[0], window.shape[1], -1)


def create(spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32) -> NvjpegPipeline:
    """torchvision's nvJPEG decoder on the GPU (no DALI needed); batches are torch CUDA tensors
    `(ids, float32 (N, C, H, W), n_valid)`."""
    return NvjpegPipeline(spec, workers, depth, hdu, batch_size)
