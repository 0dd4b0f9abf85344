"""Where a FITS file's image is, from its headers alone: the HDU walk, the image HDU (or a set of
band extensions), the size limits, the band names, object id and sky position (`locate_image`).

No pixel data is read here; `galaxy.io.fits` reads the pixels of what this finds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from galaxy.errors import ImageReadError
from galaxy.io.bands import cube_bands, header_band
from galaxy.io.sky import centre_position
from galaxy.spec import MIN_SIDE, too_small

# Refuse an image HDU whose header promises more pixels (a cube's planes together) than this, before
# any allocation. The composite peaks at ~80 bytes a pixel (float64 steps over the whole image; 1.28 GB
# for one 4096^2 band, measured), so a field of 256 Mpixel would take ~20 GB per decode worker and end
# the run out of memory on every rerun; 32 Mpixel (~2.6 GB) is a 5,800^2 band or three 3,300^2 ones,
# far above any cutout.
MAX_PIXELS = 32 * 1024 * 1024
# A file with more HDUs than this is no cutout (and is not walked further).
MAX_HDUS = 1000
# The pixel types of the FITS standard (BITPIX): integers of 8-64 bits, IEEE floats of 32 and 64.
FITS_BITPIX = (8, 16, 32, 64, -32, -64)
BLOCK = 2880  # bytes in a FITS block: headers and data are padded to whole blocks
# Header keys holding a catalogue object id, in order of preference.
OBJID_KEYS = ("OBJID", "OBJ_ID", "OBJECTID", "SDSS_ID")


def walk_hdus(hdul) -> list:
    """Every HDU of an open (lazily loaded) FITS file, read one by one with their headers checked first.

    astropy walks a file by each header's data size: a negative axis length (NAXIS2 = -5) can point
    the next header back at the same one, and `len(hdul)`, a loop over it or a search by EXTNAME
    then read that HDU again forever, taking memory (gigabytes within minutes) while a run showed
    nothing and ignored SIGTERM. Walking by index, a header with a negative axis, an HDU that does not
    start after the one before, or more than MAX_HDUS HDUs is refused instead; so is a BITPIX the standard
    does not define (astropy's error named only the number).

    Raises:
        ValueError: naming the HDU and the reason.
    """
    found, last = [], -1
    while True:
        try:
            hdu = hdul[len(found)]
        except IndexError:
            return found
        header = hdu.header
        for key in ("BITPIX", "ZBITPIX"):  # astropy reads pixels of another by a table it lacks: "KeyError: 12"
            if key in header and header[key] not in FITS_BITPIX:
                raise ValueError(f"HDU {len(found)}'s header has {key} = {header[key]!r}, not a FITS BITPIX "
                                 f"({', '.join(map(str, FITS_BITPIX))})")
        for key in ("NAXIS", "ZNAXIS"):
            axes = header.get(key, 0)
            for n in range(1, axes + 1) if isinstance(axes, int) else ():
                value = header.get(f"{key}{n}")
                if isinstance(value, int) and value < 0:
                    raise ValueError(f"HDU {len(found)}'s header has {key}{n} = {value}, a negative axis length")
        if not hasattr(hdu, "fileinfo"):  # (an AttributeError traceback had named only astropy's class)
            kind = type(hdu).__name__
            why = ("says it does not conform to the FITS standard (SIMPLE = F)" if kind == "_NonstandardHDU"
                   else f"has a header astropy cannot parse ({kind.strip('_')})")
            raise ValueError(f"HDU {len(found)} {why}")
        info = hdu.fileinfo()
        start = info["hdrLoc"] if info else last + 1
        if start <= last:
            raise ValueError(f"HDU {len(found)} does not start after HDU {len(found) - 1} (a header's data size "
                             "points back)")
        if len(found) >= MAX_HDUS:
            raise ValueError(f"more than {MAX_HDUS} HDUs")
        found.append(hdu)
        last = start


def _hdus(hdul, path) -> list:
    """`walk_hdus` of an image file: its refusal as the file's ImageReadError."""
    try:
        return walk_hdus(hdul)
    except ValueError as exc:
        raise ImageReadError(path, f"not a readable FITS file: {exc}") from None


def _image_hdu(hdus: list, hdu, path):
    """The HDU a file's image is read from, of its walked HDUs (`_hdus`): the one `hdu` names, else the
    first with image data."""
    if hdu is not None:
        if isinstance(hdu, int):
            chosen = hdus[hdu] if -len(hdus) <= hdu < len(hdus) else None
        else:  # an EXTNAME, as astropy matches it (case-insensitive, EXTVER 1)
            key = hdu.strip().upper()
            chosen = next((h for h in hdus if h.name.strip().upper() == key), None)
            if chosen is None and key == "PRIMARY":  # astropy's name for HDU 0, whatever its EXTNAME
                chosen = hdus[0] if hdus else None
        if chosen is None:
            raise ImageReadError(path, f"has no HDU {hdu!r} ({len(hdus)} HDUs)")
        if not chosen.is_image or not chosen.header.get("NAXIS", 0):
            raise ImageReadError(path, f"HDU {hdu!r} holds no image data")
        return chosen
    for candidate in hdus:
        if candidate.is_image and candidate.header.get("NAXIS", 0) >= 2 and all(_shape(candidate.header)):
            return candidate  # (an empty primary may be written NAXIS = 2 with zero-length axes: no data)
    shapes = [_shape(c.header) for c in hdus if c.is_image and c.header.get("NAXIS", 0) == 1]
    found = f"; 1-D data {shapes[0]} is a spectrum or profile, not a cutout" if shapes else ""
    raise ImageReadError(path, f"no HDU with 2-D or 3-D image data (only tables, empty HDUs or 1-D data{found})")


def _shape(header) -> tuple[int, ...]:
    prefix = "ZNAXIS" if "ZNAXIS" in header else "NAXIS"
    return tuple(int(header.get(f"{prefix}{i}", 0)) for i in range(1, int(header.get(prefix, 0)) + 1))


def _check_size(header, path):
    shape = _shape(header)
    pixels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if pixels > MAX_PIXELS:
        raise ImageReadError(
            path, f"header claims {' x '.join(map(str, shape))} pixels, over the limit of {MAX_PIXELS} (a field, "
                  "not a cutout: cut the galaxies out first)"
        )
    if pixels == 0:
        raise ImageReadError(path, "image HDU has a zero-length axis")
    if len(shape) >= 2 and min(shape[:2]) < MIN_SIDE:  # NAXIS1 x NAXIS2: the image plane
        if len(shape) == 3 and shape[0] <= 4 <= MIN_SIDE <= min(shape[1:]):  # (H, W, bands) written as is
            raise ImageReadError(path, f"its axes are {' x '.join(map(str, shape))} (NAXIS1 first): the bands look to "
                                       "be on NAXIS1; a cube holds its bands on NAXIS3 (numpy's first axis: write "
                                       "the array as (bands, height, width))")
        raise ImageReadError(path, too_small(shape[0], shape[1]))


def _objid(headers) -> str | None:
    for key in OBJID_KEYS:
        for header in headers:
            if key in header and str(header[key]).strip():
                return str(header[key]).strip()
    return None


@dataclass(frozen=True)
class FitsImage:
    """Where a file's image is: the zero-based indices of its image HDUs (one, or one per band
    for a multi-extension file), its number of axes, whether the header scales the data or
    marks null pixels (BSCALE/BZERO, BLANK: `scaled`, read by the reference reader), the band names from the headers (None where unnamed; one per plane or
    extension), its object id, its pixel type (BITPIX), the sky position (RA, Dec in
    degrees) of its centre when the headers give one (`galaxy.io.sky`), whether its image plane is
    square."""

    hdus: tuple[int, ...]
    ndim: int
    scaled: bool
    bands: tuple[str | None, ...]
    objid: str | None
    sky: tuple[float, float] | None = None
    bitpix: int = -32
    square: bool = True  # its image plane; a batch decoder takes square ones (`crop_resize` the others)

    def meta(self) -> dict:
        """What the catalog takes from the headers: "objid", "ra", "dec" where known."""
        out = {"objid": self.objid} if self.objid else {}
        if self.sky is not None:
            out["ra"], out["dec"] = self.sky
        return out


def _band_extensions(hdus: list, path) -> list[int]:
    """Image extensions that each hold one named band of one shape (a multi-extension band set).

    Raises:
        ImageReadError: extensions naming two or more different bands in images of different shapes (the
            first extension alone had been classified, a grey picture, without a word).
    """
    members = [k for k, h in enumerate(hdus) if h.is_image and len([n for n in _shape(h.header) if n > 1]) == 2]
    named = [k for k in members if header_band(hdus[k].header)]
    shapes = {_shape(hdus[k].header) for k in named}
    bands = {header_band(hdus[k].header) for k in named}
    if len(bands) >= 2 and len(shapes) > 1 and len(bands) == len(named):
        sides = ", ".join("x".join(map(str, s[:2])) for s in sorted(shapes))
        raise ImageReadError(path, f"its extensions hold bands {', '.join(header_band(hdus[k].header) for k in named)} "
                                   f"in images of different shapes ({sides}): "
                                   "they cannot be stacked into one colour image; give --hdu N to classify one alone")
    return named if len(named) >= 2 and len(shapes) == 1 and len(bands) == len(named) else []


def locate_image(path, hdu=None) -> FitsImage:
    """Find the image HDU(s) of a FITS file and its band names from the headers alone (no
    pixel data is read).

    Raises:
        ImageReadError: not FITS, no image HDU, or a header promising too many pixels.
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            return locate_open(hdul, path, hdu)
    except ImageReadError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise header_failure(path, exc) from exc


def header_failure(path, exc: Exception) -> ImageReadError:
    """A header that cannot be read, worded for the file."""
    if isinstance(exc, KeyError):  # a mandatory key the header promises (NAXIS = 3 and no NAXIS3)
        return ImageReadError(path, f"not a readable FITS file: the header lacks {exc}")
    if isinstance(exc, OSError) and "missing END card" in str(exc):  # astropy's words alone did not say why
        return ImageReadError(path, "not a readable FITS file: a header without its END card (the file cut short "
                                    "or damaged inside a header, or a header's NAXISn or BITPIX not matching the "
                                    "data after it, so that the next header was looked for inside the data)")
    return ImageReadError(path, f"not a readable FITS file ({type(exc).__name__}: {exc})")


def _refuse_bytes_after_the_data(hdus: list, path) -> None:
    """Refuse a file with bytes other than zero padding after its last HDU's data: a header whose NAXISn
    or BITPIX says less data than was written leaves the rest there, and astropy reads the image from
    the header's shape, only warning (NAXIS1 = 32 over 64 x 64 pixels was classified as a 32 x 64
    image cut from the rows: garbage with a confident label)."""
    info = hdus[-1].fileinfo() if hdus else None
    if not info:
        return
    end, source = info["datLoc"] + info["datSpan"], info["file"]
    size = getattr(source, "size", 0) or 0  # 0 for a .fits.gz astropy reads as a stream: read past the end
    if 0 < size <= end:
        return
    at = source.tell()
    try:
        source.seek(end)  # (in a gzip stream, by inflating up to there)
        tail = source.read(BLOCK)
    except (OSError, EOFError, zlib.error):  # a gzip stream cut short: reading the pixels refuses it (its CRC)
        return
    finally:
        source.seek(at)
    if not isinstance(tail, bytes) or not tail.strip(b"\0"):  # zero padding, as astropy allows with a note
        return
    header = hdus[-1].header
    shape = " x ".join(str(header.get(f"NAXIS{n}", 0)) for n in range(1, int(header.get("NAXIS", 0) or 0) + 1))
    count = f"{size - end} bytes" if size else "bytes"
    raise ImageReadError(path, f"{count} follow the data of its last HDU and are no FITS header: that "
                               f"header's shape (NAXISn {shape or 'none'}, BITPIX {header.get('BITPIX')}) does not "
                               "describe all the data written after it (a header edited, or a writer's error), or "
                               "something was appended to the file")


def locate_open(hdul, path, hdu) -> FitsImage:
    """`locate_image` of an open (lazily loaded) file; its callers word what astropy raises (`header_failure`)."""
    walked = _hdus(hdul, path)  # once: each walk reads and checks every header
    chosen = _image_hdu(walked, hdu, path)
    extensions = _band_extensions(walked, path) if hdu is None else []
    read = walked[extensions[0]] if extensions else chosen  # the HDUs read: a band set's, else the one
    _check_size(read.header, path)
    shape = [n for n in _shape(read.header) if n > 1]
    if extensions:
        hdus, ndim = tuple(extensions), 3
        names = tuple(header_band(walked[k].header) for k in extensions)
    else:
        hdus = (next(k for k, h in enumerate(walked) if h is chosen),)
        ndim = int(chosen.header.get("ZNAXIS", chosen.header.get("NAXIS", 0)))
        planes = shape[-1] if len(shape) == 3 else 1  # NAXIS3 counts the planes
        names = tuple(cube_bands(chosen.header, planes) or [header_band(chosen.header)] * (planes == 1)
                      or [None] * planes)
    scaled = any(float(walked[k].header.get(key, d)) != d for k in hdus for key, d in (("BSCALE", 1.0),
                                                                                        ("BZERO", 0.0)))
    scaled = scaled or any("BLANK" in walked[k].header for k in hdus)  # null pixels: the reference reader masks them
    # after the size checks: a gzipped field is refused by its header before a stream is inflated to its end here
    _refuse_bytes_after_the_data(walked, path)
    return FitsImage(hdus, ndim, scaled, names, _objid((chosen.header, walked[0].header)),
                     centre_position(chosen.header, walked[0].header),
                     int(read.header.get("ZBITPIX", read.header.get("BITPIX", -32))),
                     len(shape) >= 2 and shape[0] == shape[1])
