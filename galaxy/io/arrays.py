"""RGB images already in memory (numpy arrays, array-likes, PIL images, tensors), as the Python API's
`Model.classify_arrays` takes them: made a batch, and each image checked and cropped as the file readers
check and crop a cutout (`galaxy.io.images`), so an array is refused where its file would be.
"""

from __future__ import annotations

import numpy as np

from galaxy.errors import UsageError
from galaxy.spec import MIN_SIDE, too_small


def streamed(images) -> bool:
    """Whether `classify_arrays` reads `images` as a stream: an iterator (a generator), not an array,
    a sequence or an array-like (a tensor, a PIL image)."""
    return (not isinstance(images, (np.ndarray, list, tuple, str, bytes, dict)) and hasattr(images, "__next__")
            and not hasattr(images, "__array__") and not hasattr(images, "__array_interface__"))


def not_rgb_pil(image, index: int | None = None) -> None:
    """Refuse a PIL image whose mode is not RGB, naming the conversion (numpy reads an "L" image as (H, W),
    an "RGBA" one as (H, W, 4): a shape error had not said what to do)."""
    mode = getattr(image, "mode", None)
    if isinstance(mode, str) and callable(getattr(image, "convert", None)) and mode != "RGB":
        which = "images" if index is None else f"image {index}"
        raise UsageError(f"{which}: a PIL image in mode {mode!r}: convert it first, image.convert(\"RGB\") (as the "
                         "file readers do: grey repeated, alpha onto black), or pass the file to classify")


def image_batch(images):
    """`classify_arrays`' input as an (N, H, W, 3) array or a list of images: one image (H, W, 3) becomes a
    batch of one; array-likes (a torch tensor, a PIL image, nested lists) are read by numpy; a 1-D object
    array or any other iterable is a sequence of images. (A tensor or a PIL image had been taken for a
    sequence of rows, a generator refused by len().)"""
    not_rgb_pil(images)
    if not isinstance(images, np.ndarray):
        if isinstance(images, (str, bytes, dict)):
            raise UsageError(f"images of type {type(images).__name__}: expected arrays (for files use classify)")
        if hasattr(images, "__array__") or hasattr(images, "__array_interface__"):
            try:
                images = np.asarray(images)
            except (TypeError, RuntimeError, ValueError) as exc:  # e.g. a CUDA tensor, one that requires grad
                raise UsageError(f"images of type {type(images).__name__} cannot be read as an array: {exc}") from None
        else:
            try:
                images = list(images)
            except TypeError:
                raise UsageError(f"images of type {type(images).__name__}: expected an array (N, H, W, 3), one "
                                 "(H, W, 3) image, or a sequence of them") from None
            if images and not any(isinstance(image, np.ndarray) for image in images):  # nested lists, tensors:
                try:  # numpy reads them as one array when they form one (a ragged list stays a sequence)
                    stacked = np.asarray(images)
                except (ValueError, TypeError, RuntimeError):  # (a tensor that requires grad: `_rgb_unit` says so)
                    stacked = None
                rgb = stacked is not None and stacked.ndim in (3, 4) and stacked.shape[-1] == 3
                if rgb and stacked.dtype != object:  # (grey or RGBA PIL images stack to (N, H, W) or (N, H, W, 4):
                    images = stacked  # one by one, each is named for what it is)
            return images[None] if isinstance(images, np.ndarray) and images.ndim == 3 else images
    if images.dtype == object and images.ndim == 1:  # images of different sizes
        return list(images)
    if images.ndim == 3 and images.shape[-1] == 3:
        return images[None]
    if images.ndim != 4:  # (a stack of grey images, (N, H, W), had been taken for one image of N rows)
        raise UsageError(f"images of shape {images.shape}: expected (N, H, W, 3) or one (H, W, 3) RGB image")
    return images


def crop_resize_checked(image: np.ndarray, spec, index: int) -> np.ndarray:
    """Image `index`'s centre crop of `spec`, resized, or a UsageError naming it where a cutout file's crop
    would be refused (a blank crop, too small)."""
    from galaxy.io.images import crop_refusal, crop_resize

    reason = crop_refusal(image, spec.crop_fraction)
    if reason:
        raise UsageError(f"image {index}: {reason}")
    try:
        return crop_resize(image, spec.crop_fraction, spec.size)
    except ValueError as exc:  # e.g. too small to crop
        raise UsageError(f"image {index}: {exc}") from None


def rgb_unit(image, index: int) -> np.ndarray:
    """One (H, W, 3) image as float32 in [0, 1]: uint8 scaled by 1/255, floats checked."""
    if np.ma.isMaskedArray(image) and np.ma.getmaskarray(image).any():  # np.asarray drops the mask: the pixels
        # under it (a fill value, a saturated star) were classified as if valid
        raise UsageError(f"image {index} is a masked array with {int(np.ma.getmaskarray(image).sum())} masked values: "
                         "fill them first (e.g. image.filled(0)), as a blank pixel is read")
    not_rgb_pil(image, index)
    try:
        array = np.asarray(image)
    except (TypeError, RuntimeError, ValueError) as exc:  # e.g. a CUDA tensor, one that requires grad
        raise UsageError(f"image {index} of type {type(image).__name__} cannot be read as an array: {exc}") from None
    if array.ndim != 3 or array.shape[-1] != 3:
        raise UsageError(f"image {index} has shape {array.shape}: expected (H, W, 3) RGB")
    if min(array.shape[:2]) < MIN_SIDE:  # as every file reader refuses it: no galaxy to see at that size
        raise UsageError(f"image {index}: {too_small(array.shape[1], array.shape[0])}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype.kind != "f":
        raise UsageError(f"image {index} has dtype {array.dtype}: expected floats in [0, 1] or uint8")
    finite = np.isfinite(array)
    if not finite.all():
        raise UsageError(f"image {index} has {array.size - int(finite.sum())} pixel values that are NaN or infinite: "
                         "expected floats in [0, 1] (fill blank pixels first, e.g. with 0)")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < -1e-6 or high > 1 + 1e-6:
        raise UsageError(f"image {index} has values from {low:g} to {high:g}: expected floats in [0, 1] "
                         "(divide 0-255 pixels by 255, or pass them as uint8)")
    return array.astype(np.float32)
