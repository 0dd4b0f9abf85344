"""FITS through DALI: `fn.experimental.readers.fits` -> the asinh stretch -> DALI resize/normalise.

DALI's FITS reader takes its file list and HDU (1-based `hdu_indices`, set explicitly:
its default skips the primary HDU) when the graph is built, so a graph is built per chunk
and HDU. Headers are read first with astropy (no pixel data) to find each file's image HDU,
refuse oversized headers before DALI allocates, and take the object id. The stretch has no
DALI operator (per-image percentiles), so it runs as a `python_function` node with the
reference code; crop, resize and normalisation are DALI operators. A DALI batch must share
one HDU and one number of axes, so a chunk is grouped by both. Files with BSCALE/BZERO
scaling go to the reference reader (DALI applies only the unsigned-integer convention).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from engine.pipelines.reference import Decoded
from galaxy.errors import ImageReadError
from galaxy.fits import locate_image, stretch_to_rgb
from galaxy.spec import InputSpec

log = logging.getLogger(__name__)


def build_fits_graph(files, hdu_index: int, spec: InputSpec, threads: int):
    """A one-shot DALI graph reading HDU `hdu_index` (0-based) of `files`; (N, C, H, W) float32 out."""
    from nvidia.dali import fn, pipeline_def, types

    low, high = (1 - spec.crop_fraction) / 2, (1 + spec.crop_fraction) / 2

    def stretch(raw):
        return stretch_to_rgb(raw, spec.fits, spec.fits_bands, "<fits>")

    @pipeline_def(batch_size=len(files), num_threads=threads, device_id=None, exec_async=False, exec_pipelined=False)
    def graph():
        raw = fn.experimental.readers.fits(files=list(files), hdu_indices=[hdu_index + 1], dont_use_mmap=True)
        rgb = fn.reshape(fn.python_function(raw, function=stretch, num_outputs=1), layout="HWC")
        images = fn.resize(rgb, size=[spec.size, spec.size], roi_start=[low, low], roi_end=[high, high],
                           roi_relative=True, antialias=True, interp_type=types.INTERP_LINEAR, dtype=types.FLOAT)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=list(spec.mean),
                                        std=list(spec.std))

    pipe = graph()
    pipe.build()
    return pipe


def decode_fits(items, spec: InputSpec, threads: int, hdu=None) -> list[Decoded | None]:
    """Decode FITS `items` with DALI; None where the reference reader must take over."""
    results: list[Decoded | None] = [None] * len(items)
    groups = defaultdict(list)
    for k, item in enumerate(items):
        try:
            where = locate_image(item.path, hdu)
        except ImageReadError as exc:
            results[k] = Decoded.of(item, error=exc)
            continue
        if not where.scaled:  # DALI batches need one HDU and one number of axes
            groups[where.index, where.ndim].append((k, where.meta()))
    for (index, _), members in groups.items():
        try:
            (out,) = build_fits_graph([items[k].path for k, _ in members], index, spec, threads).run()
            tensors = np.array(out.as_tensor())
        except (RuntimeError, ValueError, ImageReadError) as exc:  # one bad file fails the group
            log.debug("DALI rejected FITS HDU %d group (%s); the reference reader retries it", index, exc)
            continue
        for j, (k, meta) in enumerate(members):
            results[k] = Decoded.of(items[k], tensor=tensors[j], meta=meta)
    return results
