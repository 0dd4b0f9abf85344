"""The sky position of a cutout's centre, from its FITS headers.

A celestial WCS in the image header wins: the centre pixel ((NAXIS1 - 1) / 2, (NAXIS2 - 1) / 2,
0-based) is transformed with astropy.wcs to a sky position and from the header's frame (RADESYS,
EQUINOX, or galactic axes; in either axis order) to ICRS (RA, Dec) in degrees. Without one, the
first pair of position keys found (`POSITION_KEYS`, in the image header then the primary header)
is used: decimal degrees, or sexagesimal strings with RA in hours, in the frame of that header's RADESYS /
EQUINOX (B1950 keys are turned into ICRS too). None when neither is there or they cannot be read.

A catalog row's own position (a kept `ra`/`dec`) replaces the header's in the output; how far apart
the two lie (`catalog_offset`) tells a row that names the wrong file, and `OffCentreRows` counts such
rows over a run for its one warning.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from dataclasses import dataclass, field

import numpy as np


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
    if not {"CRVAL1", "CRVAL2"} <= set(header):  # CTYPEs alone: astropy fills in CRVAL 0, a position ~160
        # degrees off that overrode the header's own RA/DEC keys (a missing scale is FITS's default, 1)
        log.debug("WCS without CRVAL1/2; trying position keys")
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
                    return _keys_to_icrs(ra, dec, header)
    return None


def _keys_to_icrs(ra: float, dec: float, header) -> tuple[float, float] | None:
    """Position keys in the frame their header names (RADESYS, else by EQUINOX, or EPOCH 1950: before 1984
    FK4, FITS WCS paper II's rule) as ICRS degrees. FK5 J2000 and no frame at all are taken as ICRS (they
    agree to well under 0.1 arcsec); B1950 keys had been written as they were, ~0.6 degrees off. None where
    the header names a frame or equinox that cannot be read."""
    system = str(header.get("RADESYS", header.get("RADECSYS", ""))).strip().upper()
    equinox = header.get("EQUINOX")
    if equinox is None and header.get("EPOCH") in (1950, 2000):  # EPOCH, EQUINOX's old name, is often the
        equinox = header["EPOCH"]  # date observed (2003.5) instead: only the two equinoxes it stood for
    if equinox is not None and (isinstance(equinox, bool) or not isinstance(equinox, (int, float))
                                or not np.isfinite(equinox)):
        log.debug("EQUINOX %r is not a year; no position from the keys", equinox)
        return None
    if not system:
        system = "" if equinox is None else ("FK4" if equinox < 1984 else "FK5")
    if system in ("", "ICRS") or (system == "FK5" and (equinox is None or equinox == 2000)):
        return ra % 360.0, dec
    frames = {"FK5": ("fk5", "J", 2000), "FK4": ("fk4", "B", 1950), "FK4-NO-E": ("fk4noeterms", "B", 1950)}
    if system not in frames:  # GAPPT and the like: no fixed frame to convert from
        log.debug("RADESYS %r: no position from the keys", system)
        return None
    from astropy.coordinates import SkyCoord

    frame, epoch, default = frames[system]
    centre = SkyCoord(ra, dec, unit="deg", frame=frame, equinox=f"{epoch}{equinox or default}").icrs
    return float(centre.ra.deg) % 360.0, float(centre.dec.deg)


def separation_arcsec(a: dict, b: dict) -> float:
    """Great-circle distance between two {"ra", "dec"} positions (degrees), in arcsec (haversine)."""
    ra1, dec1, ra2, dec2 = np.radians([a["ra"], a["dec"], b["ra"], b["dec"]])
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return float(np.degrees(2 * np.arcsin(np.sqrt(min(1.0, h)))) * 3600)


# The kept columns a catalog row's own position may be in (name pairs, compared ignoring case): the
# sky columns a kept column replaces, and the names VizieR gives (J2000 / ICRS, FK5 within 0.1 arcsec).
CATALOG_POSITIONS = (("ra", "dec"), ("raj2000", "dej2000"), ("_raj2000", "_dej2000"), ("ra_icrs", "de_icrs"),
                     ("radeg", "dedeg"))


def _kept_angle(text, unit: str | None, hours: bool) -> float | None:
    """A kept cell in degrees: a number in the column's unit (degrees when it has none; a unit that
    is not an angle is not read), or sexagesimal text (h:m:s for RA); None when missing or unreadable."""
    text = str(text).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:  # sexagesimal text (an RA in hours unless its unit or text says degrees), or not a position
        if not any(c in text for c in ": hmsd"):
            return None
        in_degrees = "d" in text or (unit is not None and _degrees_per(unit) == 1.0)
        return _angle(text, hours and not in_degrees)
    if not np.isfinite(value):
        return None
    if unit is None:
        return value
    degrees = _degrees_per(unit)
    return None if degrees is None else value * degrees


@functools.lru_cache(maxsize=64)
def _degrees_per(unit: str) -> float | None:
    """Degrees in one `unit` (astropy's names, or FITS's: `deg`, `DEG`, `degree`, `hourangle`, `h`,
    `rad`, `arcsec`, ...); None where it is not an angle astropy knows. Parsed once per unit."""
    import astropy.units as u

    for text, fmt in ((unit, None), (unit, "fits"), (unit.lower(), None)):
        try:
            parsed = u.Unit(text, format=fmt)
            if parsed == u.hour:  # an RA column in hours
                parsed = u.hourangle
            return float((1 * parsed).to_value(u.deg))
        except (ValueError, TypeError, u.UnitsError):  # not an angle, or not a unit in this spelling
            continue
    return None


def catalog_position(columns: dict, units: dict | None = None) -> tuple[float, float] | None | bool:
    """A catalog row's own (RA, Dec) in degrees from its kept columns: the first of CATALOG_POSITIONS
    kept, in the columns' units (`units`: name -> unit; degrees where none). None when no such pair
    is kept; False when one is kept but cannot be read (missing, not an angle, a Dec beyond 90)."""
    folded: dict[str, str] = {}
    for name in columns:  # a kept `RA` beside the header's `ra` (`Decoded.of` adds it): the kept one
        if folded.get(name.casefold(), name.casefold()) == name.casefold():
            folded[name.casefold()] = name
    for ra_name, dec_name in CATALOG_POSITIONS:
        if ra_name in folded and dec_name in folded:
            ra_key, dec_key = folded[ra_name], folded[dec_name]
            ra = _kept_angle(columns[ra_key], (units or {}).get(ra_key), hours=True)
            dec = _kept_angle(columns[dec_key], (units or {}).get(dec_key), hours=False)
            if ra is None or dec is None or not -90.0 <= dec <= 90.0:
                return False
            return ra % 360.0, dec
    return None


def catalog_offset(columns: dict, centre: dict, units: dict | None = None) -> float | None | bool:
    """Arcsec from a catalog row's own position (`catalog_position`) to its cutout's centre.

    Args:
        columns: the row's kept catalog columns (name -> text).
        centre: the headers' metadata, with "ra" and "dec" (ICRS degrees) where they give a centre.
        units: the kept columns' units (name -> unit text), where the catalog gives them.

    Returns:
        The great-circle distance in arcsec; None without a centre or without a kept position;
        False where a kept position cannot be read.
    """
    if "ra" not in centre or "dec" not in centre:
        return None
    position = catalog_position(columns, units)
    if not position:
        return position
    return separation_arcsec({"ra": position[0], "dec": position[1]}, centre)


def _angle_said(arcsec: float) -> str:
    if arcsec < 60:
        return f"{arcsec:.1f} arcsec"
    return f"{arcsec / 60:.1f} arcmin" if arcsec < 3600 else f"{arcsec / 3600:.2f} deg"


@dataclass
class OffCentreRows:
    """The rows of a run whose catalog position lies more than MAX_CATALOG_OFFSET from their
    cutout's centre: how many, the largest distance (arcsec) and the first OFF_CENTRE_IDS ids; and
    how many kept a position that could not be compared (`unread`). `units`: the kept columns'.
    A plain record (JSON as `dataclasses.asdict`), so the parts of a `--ray` run can be merged."""

    count: int = 0
    largest: float = 0.0
    ids: list = field(default_factory=list)
    unread: int = 0
    units: dict = field(default_factory=dict)

    def add(self, ident: str, columns: dict, centre: dict) -> None:
        """One classified row: its kept `columns` and the `centre` its headers give."""
        offset = catalog_offset(columns, centre, self.units)
        if offset is False:
            self.unread += 1
        elif offset is not None and offset > MAX_CATALOG_OFFSET:
            self.count += 1
            self.largest = max(self.largest, offset)
            if len(self.ids) < OFF_CENTRE_IDS:
                self.ids.append(ident)

    def merge(self, other: OffCentreRows) -> None:
        """Take in the rows of `other`, which come after these in input order."""
        self.count += other.count
        self.unread += other.unread
        self.largest = max(self.largest, other.largest)
        self.ids.extend(other.ids[:OFF_CENTRE_IDS - len(self.ids)])

    def warnings(self) -> list[str]:
        """The run's lines about these rows: none when every kept position matched its cutout."""
        lines = []
        if self.count:
            more = ", ..." if self.count > len(self.ids) else ""
            lines.append(f"{self.count} row{'s' if self.count != 1 else ''}: the catalog's position is more than "
                         f"{MAX_CATALOG_OFFSET:g} arcsec from the cutout centre in the FITS header (largest "
                         f"{_angle_said(self.largest)}: id{'s' if len(self.ids) != 1 else ''} {', '.join(self.ids)}"
                         f"{more}): the classification is of the object at the cutout centre; check the catalog's "
                         "positions and its path column")
        if self.unread:
            lines.append(f"{self.unread} row{'s' if self.unread != 1 else ''}: the catalog's position could not be "
                         "compared with the cutout centre (a missing value, a Dec beyond 90, or a unit that is "
                         "not an angle)")
        return lines
