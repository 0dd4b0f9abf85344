"""The sky position of a cutout's centre, from its FITS headers.

A celestial WCS in the image header wins: the centre pixel ((NAXIS1 - 1) / 2, (NAXIS2 - 1) / 2,
0-based) is transformed with astropy.wcs to a sky position and from the header's frame (RADESYS,
EQUINOX, or galactic axes; in either axis order) to ICRS (RA, Dec) in degrees. Without one, the
first pair of position keys found (`POSITION_KEYS`, in the image header then the primary header)
is used: decimal degrees, or sexagesimal strings with RA in hours. None when neither is there or they cannot be read.

A catalog row's own position (a kept `ra`/`dec`) replaces the header's in the output; how far apart
the two lie (`catalog_offset`) tells a row that names the wrong file, and `OffCentreRows` counts such
rows over a run for its one warning.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from galaxy.catalog.formats import SKY_COLUMNS

log = logging.getLogger(__name__)

POSITION_KEYS = (("RA", "DEC"), ("RA_OBJ", "DEC_OBJ"), ("OBJRA", "OBJDEC"), ("RA_TARG", "DEC_TARG"))
# A catalog row whose ra/dec lies further than this (arcsec) from its cutout's centre is not of that
# cutout's object. Cutout services centre on the position asked for to well under a pixel (0.2" on
# SDSS, 0.1" on KiDS, a half pixel more from an even side), and one galaxy's positions in two
# catalogues agree to a second or two even for large, irregular ones; 5" is 12 SDSS pixels or 25 KiDS
# pixels, yet well inside the galaxies classified (SDSS half-light radii of 2-4"), so an object 5"
# away is another one, or sky. A catalog whose path column is shifted by a row names objects
# arcminutes or more away. Tighter than the band files' MAX_BAND_OFFSET (galaxy.io.fits): that one
# refuses a file, this one only warns.
MAX_CATALOG_OFFSET = 5.0
# Ids named in the warning, the first ones in input order.
OFF_CENTRE_IDS = 3


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


def _decimal_degrees(text) -> float | None:
    """A kept cell as decimal degrees: a finite number, else None (missing, sexagesimal, other text)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def catalog_offset(columns: dict, centre: dict) -> float | None:
    """Arcsec from a catalog row's own position to its cutout's centre, when both are known.

    Args:
        columns: the row's kept catalog columns (name -> text); its position is the `ra` and `dec`
            among them, in any case (`RA`, `Dec`), in decimal degrees.
        centre: the headers' metadata, with "ra" and "dec" (ICRS degrees) where they give a centre.

    Returns:
        The great-circle distance in arcsec; None without a centre, without a kept ra and dec, or
        where either is missing, not a number (sexagesimal text is not compared) or a Dec beyond +-90.
    """
    if "ra" not in centre or "dec" not in centre:
        return None
    kept = {name.casefold(): value for name, value in columns.items() if name.casefold() in SKY_COLUMNS}
    ra, dec = _decimal_degrees(kept.get("ra", "")), _decimal_degrees(kept.get("dec", ""))
    if ra is None or dec is None or not -90.0 <= dec <= 90.0:
        return None
    return separation_arcsec({"ra": ra, "dec": dec}, centre)


@dataclass
class OffCentreRows:
    """The rows of a run whose catalog position lies more than MAX_CATALOG_OFFSET from their
    cutout's centre: how many, the largest distance (arcsec) and the first OFF_CENTRE_IDS ids.
    A plain record (JSON as `dataclasses.asdict`), so the parts of a `--ray` run can be merged."""

    count: int = 0
    largest: float = 0.0
    ids: list = field(default_factory=list)

    def add(self, ident: str, offset: float) -> None:
        """One classified row and its `catalog_offset`; counted only beyond MAX_CATALOG_OFFSET."""
        if offset > MAX_CATALOG_OFFSET:
            self.count += 1
            self.largest = max(self.largest, offset)
            if len(self.ids) < OFF_CENTRE_IDS:
                self.ids.append(ident)

    def merge(self, other: OffCentreRows) -> None:
        """Take in the rows of `other`, which come after these in input order."""
        self.count += other.count
        self.largest = max(self.largest, other.largest)
        self.ids.extend(other.ids[:OFF_CENTRE_IDS - len(self.ids)])

    def warning(self) -> str | None:
        """The run's one line about these rows; None when there are none."""
        if not self.count:
            return None
        more = ", ..." if self.count > len(self.ids) else ""
        return (f"{self.count} row{'s' if self.count != 1 else ''}: the catalog's ra/dec is more than "
                f"{MAX_CATALOG_OFFSET:g} arcsec from the cutout centre in the FITS header (largest "
                f"{self.largest:.1f} arcsec: id{'s' if len(self.ids) != 1 else ''} {', '.join(self.ids)}{more}): "
                "the classification is of the object at the cutout centre; check the catalog's path column")
