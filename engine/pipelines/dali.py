"""The DALI decode pipeline: JPEGs decoded, cropped, resized and normalised by NVIDIA DALI.

On a machine without a GPU the pipeline runs on the CPU (`device_id=None`; DALI needs
`DALI_RESTRICT_PINNED_MEM=1` there, set here when absent). The graph is the reference
preprocessing of `galaxy.io.images` expressed in DALI operators:

  decoders.image_slice (RGB, the centre crop + ROI_MARGIN px) -> resize(roi = the crop,
  antialiased linear, float) -> crop_mirror_normalize(mean*255, std*255, CHW)

which matches the reference reader to ~1e-6 (tests/engine/test_dali.py). Like the reference reader
it takes the pixels as stored and ignores an EXIF orientation (a cutout's rows and columns are the
sky's; DALI's default rotated such files, so the two readers gave them different labels). With a `device_id`
(the `dali-gpu` pipeline) JPEGs are decoded by nvJPEG (`device="mixed"`) and resized and
normalised on the GPU; batches stay in device memory as torch CUDA tensors for the GPU
backends. JPEGs with 1 or 3 components go to this graph. FITS files go, on a GPU, to DALI's
FITS reader and the colour composite in DALI operators on the GPU (`engine.pipelines.dali_fits`);
on the CPU to the reference reader, which is faster there (the same arithmetic, vectorised by
numpy instead of DALI's per-sample CPU operators). PNG (alpha, 16-bit and palette rules) and
CMYK JPEG go to the reference reader, and so does every batch DALI rejects, so a bad file gets
the reference reader's reason.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from engine.pipelines.dali_fits import decode_fits
from engine.pipelines.base import ChunkedPipeline, Decoded, blank_samples, read_jpeg
from galaxy.io.fits import is_fits_path
from galaxy.spec import InputSpec

log = logging.getLogger(__name__)

# Pixels decoded beyond the crop on each side: the antialiased resize reads up to `scale` (the
# crop's side / the network's, 3.3 for 212 -> 64 px) pixels outside the crop box, and a partial
# JPEG decode may differ in its outermost column/row; 8 px keep both out of the result.
ROI_MARGIN = 8


def build_graph(spec: InputSpec, batch_size: int, threads: int, device_id=None):
    """The DALI pipeline for one InputSpec: encoded JPEG bytes in, (N, C, H, W) float32 out.

    On the CPU only the crop's window (plus ROI_MARGIN) is decoded (`decoders.image_slice`:
    libjpeg-turbo skips the IDCT and colour conversion of the rest), and the resize reads the
    same pixels as from the whole image, so the output is the reference reader's to float
    rounding; on a GPU nvJPEG decodes whole images (the path measured on the H200).
    """
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, pipeline_def, types

    low, high = (1 - spec.crop_fraction) / 2, (1 + spec.crop_fraction) / 2

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id, prefetch_queue_depth=1,
                  exec_dynamic=True)
    def graph():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        if device_id is None:
            shape = fn.peek_image_shape(encoded, dtype=types.FLOAT, adjust_orientation=False)  # H, W, C
            height, width = shape[0], shape[1]
            x0 = dmath.max(dmath.floor(width * low) - ROI_MARGIN, 0.0)
            y0 = dmath.max(dmath.floor(height * low) - ROI_MARGIN, 0.0)
            x1 = dmath.min(dmath.ceil(width * high) + ROI_MARGIN, width)
            y1 = dmath.min(dmath.ceil(height * high) + ROI_MARGIN, height)
            images = fn.decoders.image_slice(encoded, fn.stack(x0, y0), fn.stack(x1 - x0, y1 - y0), axis_names="WH",
                                             normalized_anchor=False, normalized_shape=False, output_type=types.RGB,
                                             adjust_orientation=False)
            roi = {"roi_start": fn.stack(height * low - y0, width * low - x0),
                   "roi_end": fn.stack(height * high - y0, width * high - x0), "roi_relative": False}
        else:
            images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB, adjust_orientation=False)
            roi = {"roi_start": [low, low], "roi_end": [high, high], "roi_relative": True}
        images = fn.resize(images, size=[spec.size, spec.size], antialias=True, interp_type=types.INTERP_LINEAR,
                           dtype=types.FLOAT, **roi)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                        mean=[255 * m for m in spec.mean], std=[255 * s for s in spec.std])

    pipe = graph()
    pipe.build()
    return pipe


class DaliPipeline(ChunkedPipeline):
    """Decodes `Item`s in chunks of `batch_size`; yields `Decoded` in input order."""

    name = "dali"

    def __init__(self, spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32,
                 device_id: int | None = None):
        if device_id is None:
            os.environ.setdefault("DALI_RESTRICT_PINNED_MEM", "1")
        else:
            self.name = "dali-gpu"
        self.spec, self.workers, self.depth, self.hdu = spec, workers, depth, hdu
        self.batch_size, self.device_id = batch_size, device_id
        self._graph = build_graph(spec, batch_size, workers, device_id)
        # a crop whose resize filter reaches past the image's edge: DALI's antialiased resize extends the
        # edge pixels there and PIL renormalises its weights (crop 1.0: border rows 0.12 apart, p_spiral
        # 0.018 with int8); the filter spans about crop x side / size pixels, the margin (1 - crop) x side / 2
        self._edges_differ = spec.crop_fraction > spec.size / (spec.size + 2)
        if self._edges_differ:
            log.info("centre crop %g reaches the cutouts' edges: the reference reader decodes the JPEGs too "
                     "(DALI's resize treats edges otherwise)", spec.crop_fraction)

    def _tensors(self, out):
        """The graph's batch: numpy on the CPU; on a GPU a torch CUDA tensor, never via the host."""
        if self.device_id is None:
            return np.array(out.as_tensor())
        import torch
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = out.as_tensor()
        target = torch.empty(dense.shape(), dtype=torch.float32, device=f"cuda:{self.device_id}")
        feed_ndarray(dense, target, cuda_stream=torch.cuda.current_stream(self.device_id))
        return target

    def _chunk(self, chunk) -> list[Decoded | None]:
        fits = [k for k, item in enumerate(chunk) if is_fits_path(item.path) and not item.bands]
        encoded = [None if k in fits or item.bands or self._edges_differ else read_jpeg(item.path)
                   for k, item in enumerate(chunk)]
        to_dali = [k for k, data in enumerate(encoded) if data is not None]
        results: list[Decoded | None] = [None] * len(chunk)
        if fits and self.device_id is not None:  # on the CPU the reference reader takes them: DALI's
            # per-sample CPU operators ran the composite 3x slower (84 files: 22 s vs 6.6 s, 2-core EPYC)
            for k, decoded in zip(fits, decode_fits([chunk[k] for k in fits], self.spec, self.workers, self.hdu,
                                                    self.device_id, self._tensors)):
                results[k] = decoded
        if to_dali:
            try:
                self._graph.feed_input("encoded", [np.frombuffer(encoded[k], np.uint8) for k in to_dali])
                (out,) = self._graph.run()
                tensors = self._tensors(out)
                for j, (k, blank) in enumerate(zip(to_dali, blank_samples(tensors))):
                    if not blank:  # a blank one: the reference reader refuses it, with its reason
                        results[k] = Decoded.of(chunk[k], tensor=tensors[j])
            except RuntimeError as exc:  # one bad JPEG fails DALI's whole batch
                log.debug("DALI rejected a batch (%s); the reference reader retries it", exc)
                self._graph = build_graph(self.spec, self.batch_size, self.workers, self.device_id)
        return results


def create(spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32) -> DaliPipeline:
    """NVIDIA DALI on the CPU: JPEG/PNG decoded (only the crop's window), cropped, resized and normalised
    as `spec` says, in `workers` threads, `depth` batches ahead; FITS via `engine.pipelines.dali_fits`.

    Returns:
        A pipeline whose batches are `(ids, float32 (N, C, H, W), n_valid)`.
    """
    return DaliPipeline(spec, workers, depth, hdu, batch_size)
