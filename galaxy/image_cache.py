"""Training images read once into an in-memory tensor, by the reference reader."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from galaxy.errors import ImageReadError
from galaxy.images import crop_resize, read_cutout
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

    cache = torch.empty((len(paths), 3, size, size), dtype=torch.float16)
    bar = progress(f"reading {size}px", "img", total=len(paths), enabled=show, leave=False)
    try:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            for i, array in enumerate(pool.map(one, paths)):
                cache[i] = torch.from_numpy(array)
                bar.update(1)
    except ImageReadError as exc:
        raise ImageReadError(exc.path, f"{what} image unreadable: {exc.reason}") from None
    finally:
        bar.close()
    return cache
