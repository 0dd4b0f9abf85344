"""Which FITS band is shown as red, green and blue.

Survey composites put the reddest band in R (SDSS: i -> R, r -> G, g -> B), while cutout
services and archives store bands in wavelength order (g, r, i). The order is read from
the headers where they name the bands (FILTER, or BAND0/BAND1... or BAND1/BAND2... for the
planes of a cube), else the planes are taken to be in wavelength order. A user's choice
(`--bands i,r,g` by name, or `--bands 2,1,0` by plane) overrides both.
"""

from __future__ import annotations

import re

from galaxy.errors import UsageError

# Effective wavelengths in nm of the usual broad-band filters (SDSS/HSC/DECam/KiDS/2MASS).
WAVELENGTH_NM = {"u": 355, "g": 475, "r": 622, "i": 763, "z": 905, "y": 1000, "j": 1250, "h": 1650, "k": 2200,
                 "ks": 2150}
# What SDSS composites show as R, G, B; other band sets take the nearest wavelengths.
DISPLAY_NM = (763, 622, 475)
FILTER_KEYS = ("FILTER", "FILTNAM", "BAND", "FILTER1", "EXTNAME")  # EXTNAME last: an extension named g
# Words of narrow-band filter names ("H-alpha", "[OIII]"): their h or o is no broad band.
NARROW_BAND = frozenset({"alpha", "beta", "ha", "hb", "halpha", "hbeta", "oiii", "oii", "sii", "nii"})


def band_name(value) -> str | None:
    """The broad-band filter named by a header value: "SDSS r" -> "r", "HSC-G" -> "g", "g SDSS k1017"
    (KPNO/NOAO: band, system, filter serial) -> "g"; else None, also for a narrow-band filter ("H-alpha").

    The first word that is a band's name, a prime, star or one digit aside ("i'", "u*", "i2", CFHT's
    "i.MP9702"); a letter inside a word ("k1017", "zd")
    names no band (the letters of words had been taken one by one, the last winning: "g SDSS k1017" read
    as k and a g, r, i cube as three k bands).
    """
    words = [re.sub(r"(?<=[a-z])(\d|['*+])$", "", w.lower())  # i' u* r2: the band, primed or numbered
             for w in re.split(r"[\s_\-/,;:.()\[\]]+", str(value)) if w]
    if any(w in NARROW_BAND for w in words):
        return None
    return next((w for w in words if w in WAVELENGTH_NM), None)


def header_band(header) -> str | None:
    """The band a single-band HDU holds, from FILTER-like keys; an EXTNAME only when it is a band's name
    and nothing else (G_ERR, IVAR_G, IMAGE_R name no band)."""
    for key in FILTER_KEYS:
        if key in header:
            name = band_name(header[key])
            if key == "EXTNAME" and str(header[key]).strip().lower() != name:
                continue
            if name:
                return name
    return None


def same_band(a: str | None, b: str | None) -> bool:
    """Whether two band names are one filter: Ks is K (2MASS headers write FILTER = 'k' for Ks)."""
    def merged(name):
        return "k" if name == "ks" else name

    return merged(a) == merged(b)


def cube_bands(header, planes: int) -> list[str] | None:
    """Band names of a cube's planes from BANDn keys (0- or 1-based); None unless all are named."""
    for first in (0, 1):
        names = [band_name(header.get(f"BAND{first + k}", "")) for k in range(planes)]
        if all(names):
            return names
    return None


def display_order(names: list[str | None]) -> list[int]:
    """Indices of the bands to show as R, G, B (fewer for one or two bands).

    Named bands: for each of R, G, B the unused band nearest in wavelength to SDSS's i, r, g.
    Unnamed: the planes are taken to be in wavelength order (reddest last).

    Raises:
        ValueError: more than three unnamed planes (which three is a guess).
    """
    count = len(names)
    if count == 1:
        return [0]
    if all(names):
        wavelengths = [WAVELENGTH_NM[n] for n in names]
        order: list[int] = []
        for target in DISPLAY_NM[: min(count, 3)]:
            free = [k for k in range(count) if k not in order]
            order.append(min(free, key=lambda k: abs(wavelengths[k] - target)))
        return sorted(order, key=lambda k: -wavelengths[k])
    if count > 3:
        raise ValueError(f"{count} bands and no band names in the header: choose three with --bands (e.g. 3,2,1)")
    return list(range(count))[::-1]


def parse_bands(value: str | None) -> tuple[int | str, ...]:
    """`--bands` text -> a tuple of plane indices or band names (R, G, B order); () for None.

    Raises:
        UsageError: a mix of names and numbers, an unknown band or not 1-3 entries.
    """
    if not value:
        return ()
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not 1 <= len(parts) <= 3:
        raise UsageError(f"--bands takes 1 to 3 bands (R,G,B), got {value!r}")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    if any(p.isdigit() for p in parts):
        raise UsageError(f"--bands {value!r}: give band names ({', '.join(WAVELENGTH_NM)}) or plane numbers, not both")
    unknown = next((p for p in parts if p.lower() not in WAVELENGTH_NM), None)
    if unknown is not None:
        raise UsageError(f"--bands {value!r}: {unknown!r} is not a band name ({', '.join(WAVELENGTH_NM)}) "
                         "or a plane number")
    return tuple(p.lower() for p in parts)


def choose_planes(wanted: tuple[int | str, ...], names: list[str | None]) -> list[int]:
    """Planes to show as R, G, B: the user's choice if any, else `display_order`.

    Raises:
        ValueError: a wanted plane or band the file does not have.
    """
    if not wanted:
        return display_order(names)
    if isinstance(wanted[0], int):
        missing = [p for p in wanted if p >= len(names)]
        if missing:
            raise ValueError(f"has {len(names)} bands; --bands plane(s) {missing} asked for")
        return list(wanted)
    missing = [b for b in wanted if b not in names]
    if missing and not any(names):
        planes = "its plane carries" if len(names) == 1 else f"its {len(names)} planes carry"
        raise ValueError(f"{planes} no band names in the headers (FILTER, BANDn): choose planes by number "
                         "(--bands 0 for the first) or leave --bands out")
    if missing:
        raise ValueError(f"has bands {names} by its headers; --bands {missing} asked for")
    return [names.index(b) for b in wanted]
