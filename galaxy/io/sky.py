"""The sky position of a cutout's centre, from its FITS headers.

A celestial WCS in the image header wins: the centre pixel ((NAXIS1 - 1) / 2, (NAXIS2 - 1) / 2,
0-based) is transformed with astropy.wcs to a sky position and from the header's frame (RADESYS,
EQUINOX, or galactic axes; in either axis order) to ICRS (RA, Dec) in degrees. Without one, the
first pair of position keys found (`POSITION_KEYS`, in the image header then the primary header)
is used: decimal degrees, or sexagesimal strings with RA in hours. None when neither is there or they cannot be read.
"""

from __future__ import annotations

import logging
import re
import warnings

import numpy as np

log = logging.getLogger(__name__)

POSITION_KEYS = (("RA", "DEC"), ("RA_OBJ", "DEC_OBJ"), ("OBJRA", "OBJDEC"), ("RA_TARG", "DEC_TARG"))


def _angle(value, hours: bool) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    from astropy.coordinates import Angle

    try:
        text = str(value).strip()
        unit = "hourangle" if hours and any(c in text for c in ": hms") else "deg"
        return float(Angle(text, unit=unit).deg)
    except (ValueError, TypeError):
        return None


# WCS keys whose value must be a number: astropy.wcs reads a text value ('abc') as 0 without a word,
# which put a cutout's centre at RA 0.
_NUMERIC_WCS = re.compile(r"(CRVAL|CRPIX|CDELT|CROTA)\d+|(CD|PC)\d+_\d+")


def _from_wcs(header) -> tuple[float, float] | None:
    from astropy.wcs import WCS, FITSFixedWarning

    garbled = [key for key in header if _NUMERIC_WCS.fullmatch(key) and not isinstance(header[key], (int, float))]
    if garbled:
        log.debug("WCS key %s is %r, not a number; trying position keys", garbled[0], header[garbled[0]])
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
        if not wcs.has_celestial:
            return None
        nx, ny = int(header.get("ZNAXIS1", header.get("NAXIS1", 1))), int(header.get("ZNAXIS2", header.get("NAXIS2", 1)))
        # as a sky coordinate, turned into ICRS: the header's axes may come in either order and in
        # another frame (FK4 B1950, galactic), which the plain world values would pass on as "ra, dec"
        centre = wcs.celestial.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
        return float(centre.ra.deg) % 360.0, float(centre.dec.deg)
    except Exception as exc:  # astropy.wcs raises many types for a malformed WCS; then fall back to keys
        log.debug("unusable WCS (%s: %s); trying position keys", type(exc).__name__, exc)
        return None


def centre_position(image_header, primary_header=None) -> tuple[float, float] | None:
    """(RA, Dec) in degrees of the image centre, or None."""
    found = _from_wcs(image_header)
    if found is not None:
        return found
    for header in (image_header, primary_header):
        if header is None:
            continue
        for ra_key, dec_key in POSITION_KEYS:
            if ra_key in header and dec_key in header:
                ra, dec = _angle(header[ra_key], hours=True), _angle(header[dec_key], hours=False)
                if ra is not None and dec is not None and -90 <= dec <= 90:
                    return ra % 360.0, dec
    return None


def separation_arcsec(a: dict, b: dict) -> float:
    """Great-circle distance between two {"ra", "dec"} positions (degrees), in arcsec (haversine)."""
    ra1, dec1, ra2, dec2 = np.radians([a["ra"], a["dec"], b["ra"], b["dec"]])
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return float(np.degrees(2 * np.arcsin(np.sqrt(min(1.0, h)))) * 3600)
