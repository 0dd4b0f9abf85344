"""The reference reader: any supported cutout file -> the network's input array.

This is the one reference implementation of the preprocessing described by
`galaxy.spec.InputSpec`. Training, export parity, the CPU engine and the parity tests of
faster decoders (DALI) all go through it.

Raster rules (JPEG, PNG):
  * 8-bit RGB and greyscale are scaled by 1/255; greyscale is repeated to RGB;
  * palette images are expanded to RGB(A);
  * an alpha channel is composited onto black (the sky), i.e. RGB is multiplied by alpha;
  * 16-bit greyscale is scaled by 1/65535;
  * CMYK (JPEG) is converted to RGB with PIL's conversion;
  * other modes (1-bit, 32-bit float, ...) are refused with the reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from galaxy.errors import ImageReadError
from galaxy.files import require_file
from galaxy.catalog.formats import IMAGE_SUFFIXES
from galaxy.io.fits import is_fits_path, read_band_files, read_fits_cutout
from galaxy.io.jpeg import jpeg_damage, jpeg_frame, jpeg_precision
from galaxy.io.composite import crop_side, crop_spans, inside_share
from galaxy.spec import MIN_SIDE, InputSpec, too_small

RASTER_FORMATS = ("JPEG", "PNG")
MIN_INSIDE = 0.5  # the least share of the network's square crop that must lie inside the image
# Rasters with more pixels than this are refused from their header, before decoding, by every reader:
# the level at which PIL itself refuses a decompression bomb (2 x its MAX_IMAGE_PIXELS of 89,478,485;
# a 13,377 px square). A literal, so a user's `Image.MAX_IMAGE_PIXELS = None` changes nothing here.
MAX_RASTER_PIXELS = 178_956_970


def is_image_path(path) -> bool:
    """True when the file name has a suffix galaxy reads (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def is_hidden(name: str) -> bool:
    """A file or folder name that galaxy's folder walks (classify's listing, training's folders) leave out:
    one starting with a dot (macOS's AppleDouble ._x.jpeg holds no image and stopped training on a copied
    folder; tools' temporaries)."""
    return name.startswith(".")


def image_files(folder) -> list[Path]:
    """The image files under `folder` (recursive, sorted), hidden ones (`is_hidden`: the name, or a folder
    on the way) left out."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p)
                  and not any(is_hidden(part) for part in p.relative_to(folder).parts))


_LONGEST_SUFFIX_FIRST = tuple(sorted(IMAGE_SUFFIXES, key=len, reverse=True))


def stem_id(path) -> str:
    """The id of a file without a catalog or header id: its name without image suffixes
    (the longest that matches: `x.fits.gz` -> `x`), else without its last suffix."""
    name = os.path.basename(os.fspath(path).rstrip("/"))  # as Path(path).name, without building a Path
    lower = name.lower()
    for suffix in _LONGEST_SUFFIX_FIRST:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _raster_to_array(img: Image.Image, path) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode == "CMYK":
        img, mode = img.convert("RGB"), "RGB"
    if mode in ("RGB", "L"):
        arr = np.asarray(img, dtype=np.float32) / 255.0
    elif mode in ("RGBA", "LA"):
        raw = np.asarray(img, dtype=np.float32) / 255.0
        arr = raw[..., :-1] * raw[..., -1:]
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        raw = np.asarray(img)
        if raw.min() < 0 or raw.max() > 65535:
            raise ImageReadError(path, f"{mode} image has values outside 0..65535", stage="decode")
        arr = raw.astype(np.float32) / 65535.0
    else:
        raise ImageReadError(path, f"unsupported image mode {mode!r} (need RGB, greyscale, palette, "
                             "alpha, 16-bit greyscale or CMYK)", stage="decode")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def read_raster(path) -> np.ndarray:
    """Decode a JPEG or PNG file.

    Returns:
        float32 array (H, W, 3) in [0, 1], row 0 at the top.

    Raises:
        ImageReadError: unreadable, truncated, not JPEG/PNG, or an unsupported mode.
    """
    try:
        data = path.read() if hasattr(path, "read") else Path(path).read_bytes()
        refused = raster_refusal(data)
        if refused:
            raise ImageReadError(path, refused, stage="decode")
        with Image.open(io.BytesIO(data), formats=RASTER_FORMATS) as img:  # other plugins' parsers raise their own
            refused = size_refusal(*img.size)  # a header the questions above could not read
            if refused:
                raise ImageReadError(path, refused, stage="decode")
            img.load()
            return _raster_to_array(img, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, _not_raster(data), stage="decode") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"too large to decode safely ({exc})", stage="decode") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if any(word in reason.lower() for word in ("truncated", "broken data stream")):
            reason = f"truncated or corrupt image data ({reason})"
        raise ImageReadError(path, reason, stage="decode") from None


def raster_refusal(data: bytes) -> str | None:
    """Why every reader refuses a JPEG or PNG from its bytes, before decoding: empty, a size from its
    header outside MIN_SIDE..MAX_RASTER_PIXELS (PIL warns on large ones as it parses), or a JPEG whose
    image data is not whole (`jpeg_damage`); None when none of these. `read_raster` raises it; the
    batch decoders leave such a file to the reference reader, which words the refusal."""
    if not data:
        return "an empty file (0 bytes)"
    frame = jpeg_frame(data)
    if frame:
        bits = jpeg_precision(data)
        if bits not in (None, 8):  # Pillow's "unrecognised content" named no reason; DALI failed its whole chunk
            return f"a {bits}-bit JPEG: only 8-bit JPEGs are read (save it with 8 bits per sample)"
        return size_refusal(frame[2], frame[1]) or jpeg_damage(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return size_refusal(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
    return None


def size_refusal(width: int, height: int) -> str | None:
    """Why a raster of this size is no cutout to read, or None."""
    if width * height > MAX_RASTER_PIXELS:
        return f"{width} x {height} pixels is over the limit of {MAX_RASTER_PIXELS:,} (a cutout is far smaller)"
    if min(width, height) < MIN_SIDE:
        return too_small(width, height)
    return None


def _not_raster(data: bytes) -> str:
    """Why a file that is not JPEG or PNG was refused: the format it is, when PIL knows it; a file that
    begins as a JPEG or PNG but that PIL cannot open is one cut short (or broken) in its header (such a
    PNG had read "not a JPEG or PNG image")."""
    for signature, kind in ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG")):
        if data.startswith(signature):
            return (f"truncated or corrupt {kind}: it begins as one but its header ends or breaks within "
                    f"{len(data):,} bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return f"is {img.format}, not JPEG or PNG"
    except Exception:  # any plugin's parser may raise on content that is no image at all
        return "not a JPEG or PNG image (unrecognised content)"


def read_cutout(path, spec: InputSpec, hdu=None, only_crop: bool = False) -> tuple[np.ndarray, dict]:
    """Read any supported cutout (JPEG, PNG, FITS) into display-scaled RGB.

    Args:
        path: the file.
        spec: supplies the FITS stretch and band choice.
        hdu: FITS HDU index or name; None picks the first with image data.
        only_crop: FITS: compute only the pixels the spec's crop and resize read (the others are 0).

    Returns:
        (pixels, meta): float32 (H, W, 3) in [0, 1], and metadata ("objid" for FITS files
        whose header carries one).
    """
    if not str(path).strip():
        raise ImageReadError(path, "empty path: the catalog row names no file")
    path = Path(path)
    require_file(path)
    if is_fits_path(path):
        return read_fits_cutout(path, spec, hdu, only_crop)
    return read_raster(path), {}


def _crop_padding(n: int, side: float, size: int) -> int:
    """Zeros added on each end of an axis of n pixels for a square crop of `side` resized to `size`: around
    a short side the crop reaches beyond, and around the filter's reach past the crop (none otherwise)."""
    return int(np.ceil((side - n) / 2 + side / size)) + 1 if side > n else 0


def crop_resize(pixels: np.ndarray, crop_fraction: float, size: int) -> np.ndarray:
    """Centre-crop and resize an (H, W, C) float32 image.

    The crop is the square of `crop_side` (the fraction of the longer side; non-square cutouts were
    squashed into the square, a 2:1 elliptical read as a spiral): where it reaches beyond a short
    side, the pixels there are 0 (no data). The box is computed in sub-pixel coordinates and handed to
    PIL's antialiased bilinear filter, so crop and resize are one resampling step.

    Returns:
        float32 array (size, size, C).
    """
    height, width = pixels.shape[:2]
    if height < 2 or width < 2:
        raise ValueError(f"image of {width} x {height} pixels is too small")
    side = crop_side(height, width, crop_fraction)
    pad_h, pad_w = (_crop_padding(n, side, size) for n in (height, width))
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)))
        height, width = pixels.shape[:2]
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(pixels[:, :, c]), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR, box=box))
        for c in range(pixels.shape[2])
    ]
    return np.stack(channels, axis=-1)


def resample_weights(height: int, width: int, crop_fraction: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`crop_resize` as two matrices: float32 (size, height) and (size, width), so that for one band
    `rows @ band @ columns.T` is its output (PIL resamples rows first, then columns, in float32). For
    decoders that resize on a device (the nvjpeg pipeline): the same sub-pixel box, the same zeros
    past a short side, PIL's triangle filter coefficients (Resample.c `precompute_coeffs`)."""
    side = crop_side(height, width, crop_fraction)

    def axis(n: int) -> np.ndarray:
        pad = _crop_padding(n, side, size)  # as crop_resize pads
        padded = n + 2 * pad
        # PIL parses the box as C floats and takes their difference in float (a float64 box had drifted by up
        # to 3.5e-5 at crop 0.7)
        low, high = float(np.float32((padded - side) / 2)), float(np.float32((padded + side) / 2))
        scale = float(np.float32(high) - np.float32(low)) / size
        filterscale = max(scale, 1.0)
        support = 1.0 * filterscale  # bilinear: support 1
        weights = np.zeros((size, padded), np.float64)
        for out in range(size):
            centre = low + (out + 0.5) * scale
            first = max(int(centre - support + 0.5), 0)
            last = min(int(centre + support + 0.5), padded)
            taps = np.arange(first, last)
            w = np.maximum(0.0, 1.0 - np.abs((taps - centre + 0.5) / filterscale))
            if w.sum() != 0:
                w = w / w.sum()
            weights[out, first:last] = w
        return weights[:, pad:pad + n].astype(np.float32)  # the padding is zeros: its taps add nothing

    return axis(height), axis(width)


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] -> (C, H, W) float32 normalised by the spec's mean/std."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def load_input(path, spec: InputSpec, hdu=None) -> tuple[np.ndarray, dict]:
    """Read and fully preprocess one cutout for the network.

    Returns:
        (tensor, meta): float32 (C, size, size) laid out as `spec.layout` wants, and the
        file's metadata.

    Raises:
        ImageReadError: the file cannot be read or preprocessed; the reason says why.
    """
    pixels, meta = read_cutout(path, spec, hdu, only_crop=True)
    return _network_input(pixels, spec, path), meta


def load_band_input(bands, spec: InputSpec, hdu=None) -> tuple[np.ndarray, dict]:
    """`load_input` for a galaxy stored as one FITS file per band: `bands` is ((band, path), ...)."""
    pixels, meta = read_band_files(dict(bands), spec, hdu, only_crop=True)
    return _network_input(pixels, spec, ";".join(path for _, path in bands)), meta


def too_little_inside(height: int, width: int, crop_fraction: float) -> str | None:
    """Why a cutout is refused because most of the square the network reads lies outside it, or None.

    A short side is padded with zeros (`crop_resize`); below MIN_INSIDE of the square inside the image,
    what the network sees is mostly padding: eight SDSS galaxies cut to 24 x 424 were all called spiral
    (p ~ 1). MIN_INSIDE is the rule for masked pixels too (at least half of what the network reads measured).
    """
    share = inside_share(height, width, crop_fraction)
    if share >= MIN_INSIDE:
        return None
    return (f"{width} x {height} pixels: only {share:.0%} of the square the network reads (the central {crop_fraction:g} "
            f"of the longer side) lies inside the image; at least {MIN_INSIDE:.0%} must (a strip or thin slice is not "
            "a cutout; a smaller --crop-fraction reads less)")


# The largest spread of a band (display units, [0, 1]) across the crop that still counts as one value:
# far below one 8-bit grey level (0.0039), far above what resampling a constant image leaves (~1e-7).
BLANK_SPREAD = 1e-4


def blank_reason(pixels: np.ndarray, crop_fraction: float) -> str | None:
    """Why a cutout (H, W, C) in [0, 1] is refused as blank: every band holds one value across the part
    of the network's square crop that lies inside it (an empty or off-footprint cutout, all black or
    all white; the zeros a non-square cutout is padded with do not count), or None. A network labels
    such an image as confidently as a galaxy (an all-black JPEG: elliptical, p 0.94); the FITS reader
    refuses a constant image for the same reason."""
    (top, bottom), (left, right) = crop_spans(pixels.shape[0], pixels.shape[1], crop_fraction)
    region = pixels[top:bottom, left:right]
    if region.ndim == 2:
        region = region[..., None]
    # a galaxy differs by more than the spread within a coarse grid of its crop: answered there (two
    # pixels that differ decide it), the whole crop read only for a cutout that may be blank (2 ms of
    # the reference reader's ~4 ms per SDSS cutout had gone to reducing the whole crop)
    sample = region[::8, ::8]
    if sample.size and (np.ptp(sample, axis=(0, 1)) > BLANK_SPREAD).any():
        return None
    flat = region.reshape(-1, region.shape[-1])
    if flat.size == 0 or not np.isfinite(flat).all() or (flat.max(axis=0) - flat.min(axis=0) > BLANK_SPREAD).any():
        return None  # (non-finite pixels are refused after the resize, with their own reason)
    values = ", ".join(f"{v:.3g}" for v in flat[0])
    return (f"blank: every pixel of the crop the network reads has one value ({values}): nothing to classify "
            "(an empty or off-footprint cutout)")


def crop_refusal(pixels: np.ndarray, crop_fraction: float) -> str | None:
    """Why a cutout (H, W, C) in [0, 1] is refused before its crop is read (`too_little_inside`,
    `blank_reason`), or None: the one rule of the file readers and `classify_arrays`."""
    return too_little_inside(pixels.shape[0], pixels.shape[1], crop_fraction) or blank_reason(pixels, crop_fraction)


def _network_input(pixels: np.ndarray, spec: InputSpec, path) -> np.ndarray:
    reason = crop_refusal(pixels, spec.crop_fraction)
    if reason:
        raise ImageReadError(path, reason, stage="preprocess")
    try:
        resized = crop_resize(pixels, spec.crop_fraction, spec.size)
    except ValueError as exc:
        raise ImageReadError(path, str(exc), stage="preprocess") from None
    if not np.isfinite(resized).all():
        raise ImageReadError(path, "preprocessing produced non-finite values", stage="preprocess")
    return normalise(resized, spec)
