"""FITS through DALI: `fn.experimental.readers.fits` -> the colour composite in DALI operators -> resize/normalise.

DALI's FITS reader takes its file list and HDUs (1-based `hdu_indices`, set explicitly:
its default skips the primary HDU) when the graph is built, so a graph is built per chunk
and layout. Headers are read first with astropy (no pixel data) to find each file's image
HDU(s) and band names, refuse oversized headers before DALI allocates, and take the object
id. The composite (`galaxy.io.composite`: sigma-clipped sky and noise, the Lupton asinh with its
softening solved by bisection) is the same arithmetic written in DALI operators
(`composite_graph`), so it runs wherever the graph runs, on a GPU too. A DALI batch must
share one HDU set, number of axes and band order, so a chunk is grouped by them. Files with
BSCALE/BZERO scaling or non-finite pixels, and galaxies stored as one file per band, go to
the reference reader (DALI applies only the unsigned-integer convention and has no masked
median). DALI's reader (cfitsio) checks a gzip file's CRC itself: 30 of 30 flipped bytes refused.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import numpy as np

from engine.pipelines.base import Decoded, blank_samples
from galaxy.catalog.formats import MASKED_COLUMN
from galaxy.errors import ImageReadError
from galaxy.io.bands import choose_planes
from galaxy.io.fits_hdus import locate_image
from galaxy.spec import FitsStretch, InputSpec

log = logging.getLogger(__name__)
# The constant-band test of the centre crop reads this share of the side less on each edge than the crop.
CROP_CHECK_MARGIN = 0.01


def composite_graph(planes, stretch: FitsStretch, crop_fraction: float | None = None):
    """DALI operators: display-ordered (H, W) band planes -> (H, W, 3) composite in [0, 1], and
    a per-sample check value that is finite only when every pixel was finite and no band holds
    one value everywhere (an all-zero band among others: the reference reader refuses it), nor a
    band whose clipped sky is one value (the reference reader's `quantisation_noise`), nor,
    with `crop_fraction`, across the centre crop the network reads (zeros off a band's footprint).
    That last test reads a square a little inside the crop (CROP_CHECK_MARGIN of the side each way),
    so that whatever the reference reader's rounding of the crop refuses is handed to it: a file
    flagged here is decoded by the reference reader, which refuses it or classifies it.

    The arithmetic of `galaxy.io.composite.lupton_composite`, step for step, in float32.
    """
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, types

    cube = fn.cast(fn.stack(*planes, axis=2), dtype=types.FLOAT)
    cube = fn.flip(fn.reshape(cube, layout="HWC"), horizontal=0, vertical=1)  # FITS rows run bottom-up
    scale = fn.reductions.max(dmath.abs(cube))
    spread = fn.reductions.max(cube, axes=[0, 1]) - fn.reductions.min(cube, axes=[0, 1])  # per band; 0: constant
    check = fn.reductions.sum(cube - cube) / scale + fn.reductions.sum(0.0 / spread)
    if crop_fraction is not None:
        inner = max(crop_fraction - 2 * CROP_CHECK_MARGIN, CROP_CHECK_MARGIN)
        centre = fn.slice(cube, rel_start=[(1 - inner) / 2] * 2, rel_shape=[inner] * 2, axes=[0, 1])
        centre_spread = fn.reductions.max(centre, axes=[0, 1]) - fn.reductions.min(centre, axes=[0, 1])
        check = check + fn.reductions.sum(0.0 / centre_spread)
    x = cube / scale
    keep = fn.cast(x == x, dtype=types.FLOAT)
    for _ in range(stretch.sky_iterations + 1):
        count = fn.reductions.sum(keep, axes=[0, 1])
        sky = fn.reductions.sum(x * keep, axes=[0, 1]) / count
        std = dmath.sqrt(fn.reductions.sum((x - sky) * (x - sky) * keep, axes=[0, 1]) / count)
        used, keep = keep, keep * fn.cast(dmath.abs(x - sky) <= stretch.sky_clip_sigma * std, dtype=types.FLOAT)
    sigma = fn.reductions.mean(std)
    # a band whose clipped sky is one value (quantised data): its std here is float32 rounding (~6e-8, not
    # the reference's 0), and the quantisation noise needs the distinct values (a sort DALI lacks), so such
    # a file is handed to the reference reader (x lies in [-1, 1]: +-2 leaves the pixels clipped out)
    highest = fn.reductions.max(x * used - 2 * (1 - used), axes=[0, 1])
    lowest = fn.reductions.min(x * used + 2 * (1 - used), axes=[0, 1])
    check = check + fn.reductions.sum(0.0 / fn.cast(highest > lowest, dtype=types.FLOAT))  # 0 / 0: one value
    x = (x - sky) / sigma + stretch.black_sigma
    intensity = fn.reductions.mean(x, axes=[2], keep_dims=True)
    box = fn.filter(intensity, types.Constant(np.full((3, 3), 1 / 9, np.float32)), border="clamp")
    top = (1 - stretch.peak_region) / 2
    peak = fn.reductions.max(fn.slice(box, rel_start=[top, top], rel_shape=[stretch.peak_region] * 2, axes=[0, 1]))
    scaled = stretch.noise_level * peak
    lo, hi = scaled * 0 + float(np.log(stretch.u_range[0])), scaled * 0 + float(np.log(stretch.u_range[1]))
    for _ in range(stretch.u_steps):  # bisection in log u, as `solve_softening`
        mid = (lo + hi) * 0.5
        u = dmath.exp(mid)
        above = fn.cast(dmath.asinh(scaled * u) / u > stretch.peak_level, dtype=types.FLOAT)
        lo, hi = above * mid + (1 - above) * lo, above * hi + (1 - above) * mid
    u = dmath.exp((lo + hi) * 0.5)
    positive = fn.cast(intensity > 0, dtype=types.FLOAT)
    ratio = positive * dmath.asinh(stretch.noise_level * u * intensity) / u / (positive * intensity + 1 - positive)
    out = dmath.max(x * ratio, 0.0)
    brightest = fn.reductions.max(out, axes=[2], keep_dims=True)
    over = fn.cast(brightest > 1.0, dtype=types.FLOAT)
    out = out / (over * brightest + 1 - over)
    if len(planes) == 1:
        out = fn.cat(out, out, out, axis=2)
    elif len(planes) == 2:
        red, blue = out[:, :, 0:1], out[:, :, 1:2]
        out = fn.cat(red, (red + blue) * 0.5, blue, axis=2)
    return fn.reshape(out, layout="HWC"), check


def build_fits_graph(files, hdus: tuple[int, ...], order: list[int], ndim: int, spec: InputSpec, threads: int,
                     device_id: int | None = None):
    """A one-shot DALI graph reading HDUs `hdus` (0-based) of `files`, planes in display `order`;
    outputs (N, C, H, W) float32 and the per-sample finiteness check. With a `device_id` the
    composite, resize and normalisation run on that GPU (the reader reads on the CPU)."""
    from nvidia.dali import fn, pipeline_def, types

    if device_id is None:  # DALI on a machine without a GPU (as in engine.pipelines.dali)
        os.environ.setdefault("DALI_RESTRICT_PINNED_MEM", "1")
    low, high = (1 - spec.crop_fraction) / 2, (1 + spec.crop_fraction) / 2

    @pipeline_def(batch_size=len(files), num_threads=threads, device_id=device_id, exec_async=False,
                  exec_pipelined=False)
    def graph():
        raw = fn.experimental.readers.fits(files=list(files), hdu_indices=[h + 1 for h in hdus], dont_use_mmap=True)
        raw = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if len(hdus) > 1:  # one band per extension
            planes = [raw[k] for k in order]
        elif ndim == 3:  # a cube: its planes
            planes = [raw[0][k] for k in order]
        else:
            planes = raw
        if device_id is not None:
            planes = [plane.gpu() for plane in planes]
        rgb, check = composite_graph(planes, spec.fits, spec.crop_fraction)
        images = fn.resize(rgb, size=[spec.size, spec.size], roi_start=[low, low], roi_end=[high, high],
                           roi_relative=True, antialias=True, interp_type=types.INTERP_LINEAR, dtype=types.FLOAT)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=list(spec.mean),
                                        std=list(spec.std)), check

    pipe = graph()
    pipe.build()
    return pipe


def decode_fits(items, spec: InputSpec, threads: int, hdu=None, device_id: int | None = None,
                to_tensors=None) -> list[Decoded | None]:
    """Decode FITS `items` with DALI; None where the reference reader must take over.

    `to_tensors` turns the graph's output batch into per-sample tensors (default: numpy on
    the CPU; the GPU pipeline passes its device-tensor conversion).
    """
    results: list[Decoded | None] = [None] * len(items)
    groups = defaultdict(list)
    for k, item in enumerate(items):
        try:
            where = locate_image(item.path, hdu)
            order = tuple(choose_planes(spec.fits_bands, list(where.bands)))
        except ImageReadError as exc:
            results[k] = Decoded.of(item, error=exc)
            continue
        except ValueError:  # the reference reader words the refusal
            continue
        if not where.scaled and where.square:  # DALI batches need one HDU set, number of axes, pixel type
            # and band order; its crop is of each side, the reference reader's of a non-square one the square
            groups[where.hdus, where.ndim, order, where.bitpix].append((k, where.meta()))
    for (hdus, ndim, order, _), members in groups.items():
        try:
            tensors, checks = build_fits_graph([items[k].path for k, _ in members], hdus, list(order), ndim, spec,
                                               threads, device_id).run()
            tensors = to_tensors(tensors) if to_tensors else np.array(tensors.as_tensor())
            checks = checks.as_cpu() if hasattr(checks, "as_cpu") else checks
        except (RuntimeError, ValueError, IndexError) as exc:  # one bad file fails the group
            log.debug("DALI rejected FITS HDUs %s group (%s); the reference reader retries it", hdus, exc)
            continue
        blank = blank_samples(tensors)
        for j, (k, meta) in enumerate(members):
            # NaN/inf pixels (the reference reader fills them) and blank crops (it refuses them) go to it
            if np.isfinite(np.asarray(checks[j])).all() and not blank[j]:
                results[k] = Decoded.of(items[k], tensor=tensors[j], meta={**meta, MASKED_COLUMN: 0.0})  # none masked
    return results
