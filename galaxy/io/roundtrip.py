"""The FITS round trip: survey JPEG composites turned back into linear g, r, i flux cubes.

Each JPEG (R = i, G = r, B = g, as SDSS composites are made) is inverted with
`galaxy.io.composite.invert_composite` under a random softening and mode, put in a random
flux unit spanning five decades, given a small random sky pedestal, and written as a
float32 cube with its planes in wavelength order (g, r, i, named by BAND0..BAND2 keys)
and its rows bottom-up, as FITS stores them. Classifying the cube and the JPEG must then
give the same labels: the check that FITS inputs are seen as the model's training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galaxy.io.composite import invert_composite

CUBE_BANDS = ("g", "r", "i")  # plane order written (wavelength order); JPEG channels B, G, R


@dataclass(frozen=True)
class RoundTripDraw:
    """One galaxy's random inversion: softening, mode ("lupton"/"channel"), unit, pedestal (x flux max)."""

    softening: float
    mode: str
    unit: float
    pedestal: float


def draw(rng: np.random.Generator, softening=(0.02, 1.0), decades=(-12.0, -7.0), pedestal=(0.0, 0.02)) -> RoundTripDraw:
    """A random inversion: softening log-uniform, unit 10**uniform(decades), pedestal uniform."""
    return RoundTripDraw(float(np.exp(rng.uniform(np.log(softening[0]), np.log(softening[1])))),
                         str(rng.choice(["lupton", "channel"])), float(10 ** rng.uniform(*decades)),
                         float(rng.uniform(*pedestal)))


def flux_cube(rgb: np.ndarray, how: RoundTripDraw) -> np.ndarray:
    """Display RGB (H, W, 3) in [0, 1] -> float32 (3, H, W) g, r, i flux, rows bottom-up."""
    linear = invert_composite(rgb, how.softening, how.mode)
    linear = (linear + how.pedestal * linear.max()) * how.unit
    return np.ascontiguousarray(linear[::-1, :, ::-1].transpose(2, 0, 1), dtype=np.float32)


def write_cube(path, rgb: np.ndarray, how: RoundTripDraw, bands=CUBE_BANDS) -> None:
    """Write the round-trip cube of `rgb` (all three bands, or the `bands` subset) as a FITS file."""
    from astropy.io import fits

    cube = flux_cube(rgb, how)
    planes = [CUBE_BANDS.index(b) for b in bands]
    data = cube[planes] if len(planes) > 1 else cube[planes[0]]
    header = fits.Header()
    for k, band in enumerate(bands):
        header[f"BAND{k}"] = (band, f"plane {k}")
    if len(bands) == 1:
        header["FILTER"] = bands[0]
    header["BUNIT"] = (f"{how.unit:.3e} arbitrary", "round trip: unit of the flux")
    header["RTSOFT"] = (how.softening, "round trip: softening undone")
    header["RTMODE"] = (how.mode, "round trip: lupton or channel")
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)


def fits_views(rgb: np.ndarray, stretch, rng: np.random.Generator, views: int = 2,
               single_band: bool = True) -> list[np.ndarray]:
    """What the FITS path makes of a galaxy whose flux was stored in other ways (for training).

    Each view inverts the JPEG composite `rgb` (H, W, 3) with a random `draw` and composites
    it again exactly as a FITS input is (`galaxy.io.composite.lupton_composite`, sky subtraction
    included); with `single_band` one more view holds the r band alone (the grey picture a
    2-D FITS file gives). Planes stay in display order: band order is the reader's business.

    Returns:
        float32 (H, W, 3) arrays in [0, 1], top row first, `views` (+1) of them.
    """
    from galaxy.io.composite import lupton_composite

    out = []
    for k in range(views + int(single_band)):
        how = draw(rng)
        linear = invert_composite(rgb, how.softening, how.mode)
        linear = linear + how.pedestal * linear.max()
        if k == views:  # the r band (JPEG green) alone: grey
            out.append(np.repeat(lupton_composite(linear[:, :, 1:2], stretch), 3, axis=2))
        else:
            out.append(lupton_composite(linear, stretch))
    return out
