"""Training images read once into an in-memory tensor, by the reference reader."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from galaxy.cores import usable_cores
from galaxy.errors import ImageReadError, unreadable
from galaxy.io.images import crop_resize, read_cutout
from galaxy.progress import progress
from galaxy.spec import InputSpec


def build_cache(paths, crop_fraction: float, size: int, workers: int, show: bool = True,
                what: str = "training") -> torch.Tensor:
    """Read every image once, centre-cropped to `crop_fraction` and resized to `size`.

    Returns:
        float16 (N, 3, size, size) display pixels in [0, 1], in the order of `paths`.

    Raises:
        ImageReadError: an image cannot be read (the reason names `what` it was for).
    """
    spec = InputSpec()  # only its FITS stretch and bands are used here

    def one(path):
        pixels, _ = read_cutout(path, spec)
        return crop_resize(pixels, crop_fraction, size).transpose(2, 0, 1)

    return _fill(paths, one, (3, size, size), workers, f"reading {size}px", f"{what} image unreadable", show)


def _fill(inputs, one, shape: tuple[int, ...], workers: int, title: str, failure: str, show: bool) -> torch.Tensor:
    """float16 (N, *shape): `one(input)` of every input, computed `workers` at a time, in order.

    Raises:
        ImageReadError: inputs that cannot be read: the first named with its reason, the others counted
            and the next few named, so that one run finds every bad file of a folder.
    """
    cache = torch.empty((len(inputs), *shape), dtype=torch.float16)
    bar = progress(title, "img", total=len(inputs), enabled=show, leave=False)

    def guarded(item):
        try:
            return one(item)
        except ImageReadError as exc:
            return exc

    failed = []
    try:
        with ThreadPoolExecutor(max_workers=workers or usable_cores()) as pool:
            for i, array in enumerate(pool.map(guarded, inputs)):
                if isinstance(array, ImageReadError):
                    failed.append(array)
                else:
                    cache[i] = torch.from_numpy(array)
                bar.update(1)
    finally:
        bar.close()
    if failed:
        raise unreadable([ImageReadError(exc.path, f"{failure}: {exc.reason}") for exc in failed])
    return cache


def build_fits_view_cache(paths, views: int, crop_fraction: float, size: int, workers: int, seed: int,
                          show: bool = True) -> torch.Tensor:
    """Per image, what the FITS path makes of its flux (`galaxy.io.roundtrip.fits_views`: `views`
    random inversions and the r band alone), centre-cropped to `crop_fraction` and resized to `size`.

    Returns:
        float16 (N, views + 1, 3, size, size) display pixels in [0, 1], in the order of `paths`;
        the draws are fixed by `seed` and each image's position.
    """
    import numpy as np

    from galaxy.io.images import read_raster
    from galaxy.io.roundtrip import fits_views

    stretch = InputSpec().fits

    def one(k_path):
        k, path = k_path
        rng = np.random.default_rng([seed, k])
        return np.stack([crop_resize(v, crop_fraction, size).transpose(2, 0, 1)
                         for v in fits_views(read_raster(path), stretch, rng, views)])

    return _fill(list(enumerate(paths)), one, (views + 1, 3, size, size), workers, f"FITS views {size}px",
                 "training image unreadable for its FITS views", show)
