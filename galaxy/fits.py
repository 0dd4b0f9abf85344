"""Reading FITS cutouts with astropy and stretching them for the network.

Rules (documented in the README):
  * HDU: the first HDU holding image data (primary, image extension or tile-compressed
    image), unless `hdu` names one (index or EXTNAME).
  * Shape: degenerate axes of length 1 are dropped. 2-D data is one band, repeated to RGB.
    3-D data is a band cube (NAXIS3 bands); the planes `InputSpec.fits_bands` (default
    0, 1, 2) become R, G, B. Other shapes are refused.
  * Scaling: astropy applies BSCALE/BZERO. The asinh stretch of `InputSpec.fits` is then
    applied to all bands together.
  * Orientation: FITS rows run bottom-up; the array is flipped so that it reads like the
    JPEG made from the same data.
  * `.fits.gz` and tile-compressed `.fits.fz` (Rice, ...) are read by astropy directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galaxy.errors import ImageReadError
from galaxy.sky import centre_position
from galaxy.spec import FitsStretch

# Refuse headers promising more pixels than this before any allocation (4 bytes each: 1 GiB).
MAX_PIXELS = 256 * 1024 * 1024
# Header keys holding a catalogue object id, in order of preference.
OBJID_KEYS = ("OBJID", "OBJ_ID", "OBJECTID", "SDSS_ID")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")


def is_fits_path(path) -> bool:
    name = str(path).lower()
    return name.endswith(FITS_SUFFIXES)


def stretch_asinh(data: np.ndarray, stretch: FitsStretch) -> np.ndarray:
    """Percentile-clip and asinh-stretch FITS pixel values.

    Args:
        data: float array (H, W, C) of raw pixel values; may hold NaN/inf.
        stretch: the clip percentiles and softening.

    Returns:
        float32 array (H, W, C) in [0, 1].

    Raises:
        ValueError: no finite pixel, or all finite pixels equal.
    """
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError("no finite pixel values (all NaN or inf)")
    values = data[finite]
    low, high = np.percentile(values, [stretch.clip_low, stretch.clip_high])
    if not high > low:
        low, high = float(values.min()), float(values.max())
        if not high > low:
            raise ValueError(f"image is constant (every finite pixel is {low:g})")
    scaled = (np.where(finite, data, low) - low) / (high - low)
    scaled = np.clip(scaled, 0.0, 1.0)
    a = stretch.softening
    return (np.arcsinh(scaled / a) / np.arcsinh(1.0 / a)).astype(np.float32)


def _image_hdu(hdul, hdu, path):
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError):
            raise ImageReadError(path, f"has no HDU {hdu!r} ({len(hdul)} HDUs)") from None
        if not chosen.is_image or not chosen.header.get("NAXIS", 0):
            raise ImageReadError(path, f"HDU {hdu!r} holds no image data")
        return chosen
    for candidate in hdul:
        if candidate.is_image and candidate.header.get("NAXIS", 0) >= 2:
            return candidate
    raise ImageReadError(path, "no HDU with image data (only tables or empty HDUs)")


def _check_size(header, path):
    naxis = header.get("ZNAXIS", header.get("NAXIS", 0))
    prefix = "ZNAXIS" if "ZNAXIS" in header else "NAXIS"
    shape = [int(header.get(f"{prefix}{i}", 0)) for i in range(1, naxis + 1)]
    pixels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if pixels > MAX_PIXELS:
        raise ImageReadError(
            path, f"header claims {' x '.join(map(str, shape))} pixels, over the limit of {MAX_PIXELS}"
        )
    if pixels == 0:
        raise ImageReadError(path, "image HDU has a zero-length axis")


def _bands_last(data: np.ndarray, bands: tuple[int, ...], path) -> np.ndarray:
    data = np.squeeze(data)
    if data.ndim == 2:
        return data[:, :, None]
    if data.ndim == 3:
        if max(bands) >= data.shape[0]:
            raise ImageReadError(
                path, f"cube has {data.shape[0]} bands; bands {list(bands)} were asked for"
            )
        return np.stack([data[b] for b in bands], axis=-1)
    raise ImageReadError(path, f"image data has {data.ndim} dimensions {data.shape}; need 2 or 3")


def _objid(headers) -> str | None:
    for key in OBJID_KEYS:
        for header in headers:
            if key in header and str(header[key]).strip():
                return str(header[key]).strip()
    return None


@dataclass(frozen=True)
class FitsImage:
    """Where a file's image is: the HDU's zero-based index, its number of axes, whether the
    header scales the data (BSCALE/BZERO), its object id, and the sky position (RA, Dec in
    degrees) of its centre when the headers give one (`galaxy.sky`)."""

    index: int
    ndim: int
    scaled: bool
    objid: str | None
    sky: tuple[float, float] | None = None

    def meta(self) -> dict:
        """What the catalog takes from the headers: "objid", "ra", "dec" where known."""
        out = {"objid": self.objid} if self.objid else {}
        if self.sky is not None:
            out["ra"], out["dec"] = self.sky
        return out


def locate_image(path, hdu=None) -> FitsImage:
    """Find the image HDU of a FITS file from its headers alone (no pixel data is read).

    Raises:
        ImageReadError: not FITS, no image HDU, or a header promising too many pixels.
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            chosen = _image_hdu(hdul, hdu, path)
            _check_size(chosen.header, path)
            scaled = any(float(chosen.header.get(k, d)) != d for k, d in (("BSCALE", 1.0), ("BZERO", 0.0)))
            ndim = int(chosen.header.get("ZNAXIS", chosen.header.get("NAXIS", 0)))
            return FitsImage(hdul.index(chosen), ndim, scaled, _objid((chosen.header, hdul[0].header)),
                             centre_position(chosen.header, hdul[0].header))
    except ImageReadError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise ImageReadError(path, f"not a readable FITS file ({exc})") from exc


def stretch_to_rgb(data: np.ndarray, stretch: FitsStretch, bands, path) -> np.ndarray:
    """Raw image data (2-D, or a band cube) -> stretched float32 (H, W, 3) in [0, 1], top row first."""
    cube = _bands_last(np.asarray(data, dtype=np.float64), tuple(bands), path)
    try:
        stretched = stretch_asinh(cube, stretch)
    except ValueError as exc:
        raise ImageReadError(path, str(exc), stage="preprocess") from exc
    stretched = stretched[::-1]
    if stretched.shape[2] == 1:
        stretched = np.repeat(stretched, 3, axis=2)
    return np.ascontiguousarray(stretched)


def read_fits_cutout(path, stretch: FitsStretch, bands=(0, 1, 2), hdu=None):
    """Read one FITS cutout into a stretched float32 RGB array.

    Args:
        path: a .fits / .fits.gz / .fits.fz file.
        stretch: the asinh stretch to apply.
        bands: cube planes used as R, G, B.
        hdu: index or EXTNAME of the HDU; None takes the first with image data.

    Returns:
        (pixels, meta): float32 (H, W, 3) in [0, 1], and a dict with "objid" when the
        header has one of `OBJID_KEYS`, and "ra", "dec" (degrees) of the centre when known.

    Raises:
        ImageReadError: the file is not FITS, has no usable image, or its data is bad.
    """
    from astropy.io import fits

    where = locate_image(path, hdu)
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            data = hdul[where.index].data
            if data is None:
                raise ImageReadError(path, "image HDU holds no data")
            data = np.asarray(data, dtype=np.float64)
    except ImageReadError:
        raise
    except ValueError as exc:
        if "reshape" in str(exc) or "buffer is smaller" in str(exc):
            raise ImageReadError(path, f"truncated: the header promises more pixels than the file holds ({exc})",
                                 stage="decode") from None
        raise ImageReadError(path, f"not a readable FITS file ({exc})") from exc
    except (OSError, TypeError, IndexError, KeyError) as exc:
        raise ImageReadError(path, f"not a readable FITS file ({exc})") from exc
    return stretch_to_rgb(data, stretch, bands, path), where.meta()
