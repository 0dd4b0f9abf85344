"""Reading FITS cutouts with astropy and stretching them for the network.

Rules (documented in the README):
  * HDU: the first HDU holding image data (primary, image extension or tile-compressed
    image), unless `hdu` names one (index or EXTNAME): found from the headers alone by
    `galaxy.io.fits_hdus.locate_image`.
  * Bands: degenerate axes of length 1 are dropped. 2-D data is one band (a grey picture).
    3-D data is a band cube (NAXIS3 bands). Without `hdu`, a file whose image extensions
    each hold one named band (FILTER) of the same shape is one galaxy in several bands.
    Which band is R, G, B: `galaxy.io.bands` (headers, else wavelength order; `--bands`).
    One galaxy may also come as one file per band (`read_band_files`).
  * Flux: astropy applies BSCALE/BZERO; `galaxy.io.composite` then makes the colour
    composite (sky subtracted, unit-free Lupton asinh). Non-finite pixels become sky.
  * Orientation: FITS rows run bottom-up; the array is flipped so that it reads like the
    JPEG made from the same data.
  * `.fits.gz` and tile-compressed `.fits.fz` (Rice, ...) are read by astropy. A gzip-compressed
    file is decompressed whole before the pixels are read, so that gzip's CRC is checked (astropy
    stops reading before the gzip trailer: most corrupted bytes became wrong pixels without an
    error). DATASUM is not checked: a cutout written with its parent image's header (astropy keeps
    the card) carries a stale one, and valid files would be refused.
"""

from __future__ import annotations

import numpy as np

from galaxy.catalog.formats import FITS_SUFFIXES
from galaxy.io.bands import band_name, choose_planes, same_band
from galaxy.errors import ImageReadError, UsageError
from galaxy.files import require_file
from galaxy.io.fits_hdus import MAX_PIXELS, FitsImage, header_failure, locate_image, locate_open
from galaxy.io.sky import separation_arcsec
from galaxy.io.composite import crop_spans, lupton_composite, resample_reach
from galaxy.io.masked import fill_masked, masked_centre, masked_share
from galaxy.spec import FitsStretch, InputSpec

# A gzip-compressed FITS file is decompressed in memory to check its CRC: refuse one that inflates to
# more than this (a few HDUs at MAX_PIXELS in float64), before it takes the decode worker's memory.
MAX_GZIP_BYTES = 4 * MAX_PIXELS * 8
GZIP_MAGIC = b"\x1f\x8b"
# A gzip file is inflated once for its headers and pixels alike while it stays under this (every cutout); one that
# inflates past it is dropped there and has its headers checked first, read as a stream, so a field refused by
# its header (MAX_PIXELS) is held at most this much before the refusal. (Not judged by the gzip trailer's size
# field: a multi-member file, padding after the data or a file over 4 GiB makes it say less.)
HEADERS_FIRST_GZIP_BYTES = MAX_PIXELS * 4
# The least share of a band's pixels in the centre crop that must be finite (measured): below it the
# network would mostly read the sky value that blank pixels are filled with.
MIN_MEASURED = 0.5
# Band files of one galaxy whose centres lie further apart than this (arcsec) are refused: a cutout is
# a few arcmin wide, so such a file shows another field (a catalog row naming the wrong file).
MAX_BAND_OFFSET = 30.0


def is_fits_path(path) -> bool:
    name = str(path).lower()
    return name.endswith(FITS_SUFFIXES)


def band_cube(planes: list[np.ndarray], names, wanted, path, crop_fraction: float | None = None) -> np.ndarray:
    """2-D band images (in file order) -> float64 (H, W, C) in display order (R, G, B), top row first.

    Raises:
        ImageReadError: shapes differ, the bands asked for are not there, or a chosen band is not
            measured (`_check_band`; `crop_fraction`: the centre crop the network reads).
    """
    if len({p.shape for p in planes}) != 1:
        raise ImageReadError(path, f"band images differ in shape: {[p.shape for p in planes]}", stage="decode")
    try:
        order = choose_planes(tuple(wanted), list(names))
    except ValueError as exc:
        raise ImageReadError(path, str(exc), stage="preprocess") from None
    for k in order:
        # planes counted from 0, as --bands counts them (a message counting from 1 had the wrong one dropped)
        label = f"band {names[k]}" if names[k] else "the image" if len(planes) == 1 else \
            f"plane {k} (of 0-{len(planes) - 1}, as --bands counts them)"
        _check_band(planes[k], label, path, crop_fraction)
    return np.stack([planes[k] for k in order], axis=-1)[::-1]


def _check_band(plane: np.ndarray, label: str, path, crop_fraction: float | None) -> None:
    """Refuse a band that holds no measurement: no finite pixel, one value everywhere, or (with
    `crop_fraction`) fewer than MIN_MEASURED of the pixels of the centre crop finite. Such a band
    became sky or zeros in the composite and the galaxy was given a confident label all the same
    (a g band of NaN turned a spiral into p_elliptical 0.92), where one such image alone is refused."""
    finite = np.isfinite(plane)
    if not finite.any():
        raise ImageReadError(path, f"{label} has no finite pixel values (all NaN or inf)", stage="preprocess")
    values = plane if finite.all() else plane[finite]  # (a copy of every pixel only where some are blank)
    if values.min() == values.max():
        raise ImageReadError(path, f"{label} is constant ({values.min():g} wherever it is finite): "
                                   "nothing was measured", stage="preprocess")
    if crop_fraction is not None:
        (top, bottom), (left, right) = crop_spans(*plane.shape, crop_fraction)
        window = finite[top:bottom, left:right]
        measured = float(window.mean()) if window.size else 1.0  # a crop of no pixel: nothing to judge
        of = "each side" if plane.shape[0] == plane.shape[1] else "the longer side, a square"
        if measured < MIN_MEASURED:
            raise ImageReadError(path, f"{label}: only {measured:.0%} of the pixels the network reads (the "
                                       f"central {crop_fraction:g} of {of}) are finite; at least "
                                       f"{MIN_MEASURED:.0%} must be measured", stage="preprocess")
        centre = plane[top:bottom, left:right][window]
        # one value across the crop, e.g. zeros where the cutout is off the band's footprint: a spiral with its g
        # band zero over the centre was called elliptical with p 0.99 (a crop of under 4 pixels: nothing to judge)
        if centre.size >= 4 and centre.min() == centre.max():
            raise ImageReadError(path, f"{label} is constant ({centre.min():g}) across the pixels the network reads "
                                       f"(the central {crop_fraction:g} of {of}): nothing was measured there",
                                 stage="preprocess")


def _nulls_as_nan(hdu) -> np.ndarray:
    """An image HDU's data with its null (BLANK) pixels NaN, so that they are masked and filled. astropy makes
    them NaN only where it scales to floats and BLANK is not 0, and reads a pseudo-unsigned image (BZERO = 32768
    over int16; BZERO = -128 over bytes, whose BLANK and BZERO it then drops from the header) as integers with
    its nulls as a value: those had been classified as measured sky."""
    header = hdu.header  # read before the data: reading an int8 image takes BLANK and BZERO out of it
    blank, bscale, bzero = header.get("BLANK"), header.get("BSCALE", 1), header.get("BZERO", 0)
    integers = int(header.get("ZBITPIX", header.get("BITPIX", -32))) > 0  # BLANK means nothing over floats
    data = hdu.data
    if not integers or not isinstance(blank, int) or isinstance(blank, bool) or data is None:
        return data
    if np.issubdtype(data.dtype, np.integer):
        null = blank * bscale + bzero
    elif blank == 0:  # scaled to floats with the nulls left as 0 * BSCALE + BZERO, exactly BZERO (as is a measured
        null = data.dtype.type(bzero)  # value within half a float step of it: a BSCALE that small is not met)
    else:  # NaN already
        return data
    return np.where(data == null, np.nan, data.astype(np.float64))


def _planes(data: np.ndarray, path) -> list[np.ndarray]:
    data = np.squeeze(np.asarray(data, dtype=np.float64))
    if data.ndim == 2:
        return [data]
    if data.ndim == 3:
        return list(data)
    raise ImageReadError(path, f"image data has {data.ndim} dimensions {data.shape}; need 2 or 3")


def composite_rgb(cube: np.ndarray, stretch: FitsStretch, path, crop: tuple[float, int] | None = None) -> np.ndarray:
    """A display-ordered band cube -> float32 (H, W, 3) in [0, 1]: non-finite pixels are filled
    from their neighbours, or beyond their reach with the band's sky (`galaxy.io.masked`), and are
    left out of the sky statistics, then
    `galaxy.io.composite.lupton_composite`; `crop` (crop fraction, size): only the pixels that
    crop and resize read are computed (`resample_reach`), the others are 0."""
    finite = np.isfinite(cube)
    if not finite.any():
        raise ImageReadError(path, "no finite pixel values (all NaN or inf)", stage="preprocess")
    valid = None
    if not finite.all():  # every band has a finite pixel (`_check_band`)
        cube, valid = fill_masked(cube, finite), finite
    try:
        window = resample_reach(cube.shape[0], cube.shape[1], *crop) if crop else None
        rgb = lupton_composite(cube, stretch, valid, window)
    except ValueError as exc:
        raise ImageReadError(path, str(exc), stage="preprocess") from exc
    if rgb.shape[2] == 1:
        return np.repeat(rgb, 3, axis=2)
    if rgb.shape[2] == 2:  # two bands: green is their mean, as in two-band composites
        return np.stack([rgb[..., 0], rgb.mean(axis=2), rgb[..., 1]], axis=-1)
    return rgb


class _InflatesPast(Exception):
    """A gzip file inflates to more than the limit `_gunzipped` was given."""


def _gunzipped(path, limit: int = MAX_GZIP_BYTES):
    """A gzip-compressed file's whole content (CRC and length checked), or None when it is not gzip.

    Raises:
        ImageReadError: corrupt or truncated gzip data, or more than MAX_GZIP_BYTES inflated.
        _InflatesPast: more than a smaller `limit` inflated (the bytes read so far are dropped).
    """
    import gzip
    import zlib

    with open(path, "rb") as fh:
        if fh.read(2) != GZIP_MAGIC:
            return None
    chunks, total = [], 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(min(1 << 24, limit + 1 - total)):
                total += len(chunk)
                if total > limit:
                    if limit < MAX_GZIP_BYTES:
                        raise _InflatesPast(limit)
                    raise ImageReadError(path, f"inflates to more than {MAX_GZIP_BYTES >> 20} MiB: not a cutout",
                                         stage="decode")
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile (CRC, length) is an OSError
        raise ImageReadError(path, f"corrupt gzip data ({str(exc) or type(exc).__name__})", stage="decode") from None
    return b"".join(chunks)


def _read_image(path, hdu=None, first_only: bool = False) -> tuple[FitsImage, list[np.ndarray]]:
    """`locate_image` of a file and the planes of the HDUs it finds (`first_only`: of the first of them), the
    file opened, and a gzip file inflated (its CRC checked), once: astropy had inflated a .fits.gz file for the
    headers and this module again for the pixels (12 + 11 ms of a 2 MB g, r, i cube's 44 on a 2-core Zen 3)."""
    import io

    from astropy.io import fits

    try:
        try:
            inflated = _gunzipped(path, HEADERS_FIRST_GZIP_BYTES)
        except _InflatesPast:  # no cutout: its headers first, read as a stream (a field is refused there)
            locate_image(path, hdu)
            inflated = _gunzipped(path)
        source = io.BytesIO(inflated) if inflated is not None else path
        with fits.open(source, memmap=False, lazy_load_hdus=True) as hdul:
            where = locate_open(hdul, path, hdu)
            return where, _hdu_planes(hdul, where.hdus[:1] if first_only else where.hdus, path)
    except ImageReadError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:  # opening it: as `locate_image` says
        raise header_failure(path, exc) from exc


def _hdu_planes(hdul, hdus, path) -> list[np.ndarray]:
    """The 2-D planes (float64) of HDUs `hdus` of an open file, its data errors worded for `path`."""
    try:
        out = []
        for k in hdus:
            data = _nulls_as_nan(hdul[k])  # (its header read first: `_nulls_as_nan`)
            if data is None:
                raise ImageReadError(path, "image HDU holds no data")
            out.extend(_planes(data, path))
        return out
    except ImageReadError:
        raise
    except ValueError as exc:
        if "reshape" in str(exc) or "buffer is smaller" in str(exc):
            raise ImageReadError(path, f"truncated: the header promises more pixels than the file holds ({exc})",
                                 stage="decode") from None
        raise ImageReadError(path, f"not a readable FITS file ({exc})") from exc
    except (OSError, TypeError, IndexError, KeyError) as exc:
        raise ImageReadError(path, f"not a readable FITS file ({exc})") from exc
    except Exception as exc:  # e.g. corrupt tile-compressed data: cfitsio's error, gzip's EOFError
        raise ImageReadError(path, f"corrupt FITS data ({type(exc).__name__}: {exc})", stage="decode") from exc


def read_fits_cutout(path, spec: InputSpec, hdu=None, only_crop: bool = False):
    """Read one FITS cutout (one band, a band cube or one band per extension) into a colour composite.

    Args:
        path: a .fits / .fits.gz / .fits.fz file.
        spec: supplies the composite parameters (`spec.fits`) and a band choice (`spec.fits_bands`).
        hdu: index or EXTNAME of the HDU; None takes the first with image data (or every
            band extension of a multi-extension band set).
        only_crop: compute only the pixels that the spec's crop and resize read (the others are 0).

    Returns:
        (pixels, meta): float32 (H, W, 3) in [0, 1], top row first, and a dict with "objid"
        when the header has one of `OBJID_KEYS`, "ra", "dec" (degrees) of the centre when known, and
        "masked_fraction", the share of the crop's pixels that were masked and filled (`masked_share`).

    Raises:
        ImageReadError: the file is not FITS, has no usable image, or its data is bad.
    """
    where, planes = _read_image(path, hdu)
    names = where.bands if len(where.bands) == len(planes) else (None,) * len(planes)
    cube = band_cube(planes, names, spec.fits_bands, path, spec.crop_fraction)
    masked = _masked_crop(cube, spec, path)
    return composite_rgb(cube, spec.fits, path, _crop(spec, only_crop)), {**where.meta(), "masked_fraction": masked}


def _masked_crop(cube: np.ndarray, spec: InputSpec, path) -> float:
    """The share of the crop's pixels masked in some band (`masked_share`), or ImageReadError where a hole at the
    galaxy's centre cannot be filled (`masked_centre`)."""
    measured = np.isfinite(cube)
    reason = masked_centre(measured, spec.crop_fraction, spec.size)
    if reason:
        raise ImageReadError(path, reason, stage="preprocess")
    return masked_share(measured, spec.crop_fraction)


def _crop(spec: InputSpec, only_crop: bool) -> tuple[float, int] | None:
    return (spec.crop_fraction, spec.size) if only_crop else None


def read_band_files(band_paths: dict[str, str], spec: InputSpec, hdu=None, only_crop: bool = False):
    """One galaxy stored as one single-band FITS file per band: {band name: path} -> composite.

    The band names (e.g. "g", "r", "i") order the planes (reddest -> R) unless `spec.fits_bands`
    chooses. Header metadata (id, position) comes from the first file that has it; files whose
    centres lie more than MAX_BAND_OFFSET apart are refused (one is not of this galaxy).
    `only_crop`: as in `read_fits_cutout`.
    """
    label = ";".join(band_paths.values())
    planes, metas = [], []
    for band, path in band_paths.items():
        if not str(path).strip():
            raise ImageReadError(label, f"empty path for band {band}: the catalog row names no file")
        require_file(path, f"band {band}")
        where, file_planes = _read_image(path, hdu, first_only=True)
        if len(file_planes) != 1:
            raise ImageReadError(path, f"holds {len(file_planes)} bands; a band file must hold one")
        said = where.bands[0] if where.bands else None  # its header's FILTER, where it names one
        if said is not None and band_name(band) is not None and not same_band(said, band_name(band)):
            raise ImageReadError(path, f"its header names band {said}, and --band-columns gives it as band {band}: "
                                       "two columns swapped, or another band's file?")
        planes.extend(file_planes)
        metas.append((band, where.meta()))
    cube = band_cube(planes, [band_name(n) for n in band_paths], spec.fits_bands, label, spec.crop_fraction)
    masked = _masked_crop(cube, spec, label)
    return (composite_rgb(cube, spec.fits, label, _crop(spec, only_crop)),
            {**_band_files_meta(metas, label), "masked_fraction": masked})


def _band_files_meta(metas: list[tuple[str, dict]], label) -> dict:
    """One galaxy's header metadata from its band files: each key from the first file that has it;
    ImageReadError when two files' centres differ by more than MAX_BAND_OFFSET."""
    placed = [(band, meta) for band, meta in metas if "ra" in meta]
    for band, meta in placed[1:]:
        apart = separation_arcsec(placed[0][1], meta)
        if apart > MAX_BAND_OFFSET:
            raise ImageReadError(label, f"the band files are not of one galaxy: the {band} file's centre is "
                                        f"{apart:.0f} arcsec from the {placed[0][0]} file's (at most "
                                        f"{MAX_BAND_OFFSET:g} allowed)", stage="preprocess")
    out = {}
    for _, meta in metas:
        for key, value in meta.items():
            out.setdefault(key, value)
    if placed:  # ra and dec of one file, never one of each
        out["ra"], out["dec"] = placed[0][1]["ra"], placed[0][1]["dec"]
    return out


def hdu_value(value):
    """`--hdu` as given: an index ("1") becomes an int, an EXTNAME stays text, None stays None.

    Raises:
        UsageError: empty, or a negative index (astropy took "" for an unnamed extension's EXTNAME
            and -1 for a name).
    """
    if value is None:
        return None
    text = str(value).strip()
    if text.lstrip("+-").isdigit():
        if int(text) < 0:
            raise UsageError(f"--hdu {value!r}: an HDU index counts from 0 (the primary HDU)")
        return int(text)
    if not text:
        raise UsageError("--hdu is empty: give an HDU index (0 is the primary HDU) or an EXTNAME")
    return text
