"""Masked pixels of FITS cutouts (NaN or inf: bad columns, cosmic-ray and saturation masks).

A masked pixel filled with its band's sky level is a dark hole in the galaxy: a 3-pixel NaN column
through the centre of KiDS ellipticals moved p_spiral from 0.01-0.04 to 0.56-0.70, a masked 9 x 9
core to 0.90-0.99. So, per band:

  * `fill_masked`: every masked pixel within reach of measured ones takes their Gaussian-weighted
    mean (normalised convolution, the idea of astropy's `interpolate_replace_nans`, separable and in
    numpy); the rest (a blank region off a survey's edge) takes the band's sky level, as before.
  * `masked_centre`: a hole at the galaxy's centre deeper than MAX_HOLE_DEPTH pixels of the
    network's input cannot be filled honestly (the interpolated core is flat and too faint, and the
    stretch is anchored on the peak): such a cutout is refused, naming the hole, not given a label.
  * `masked_share`: the share of the pixels the network reads that were filled, which the catalog
    records per galaxy (`masked_fraction`), as a filled region away from the centre can still move a label.

The sky statistics still leave every masked pixel out (`galaxy.io.composite.sky_statistics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from galaxy.catalog.formats import MASKED_COLUMN
from galaxy.io.composite import crop_spans

# Gaussian weights of the fill: sigma in file pixels, the kernel 4 sigma wide each side; a pixel is
# filled where its known neighbours weigh at least ~0.1% of a full neighbourhood, which each pass
# reaches 6 pixels (chessboard distance) into a hole from the pixels known before it: FILL_REACH in
# all (measured: square holes are filled to depth 12, partly at 13).
FILL_SIGMA = 2.0
FILL_PASSES = 2
FILL_REACH = 6 * FILL_PASSES
# The centre whose holes are refused: the central 1/8 of the crop's side, where the cutout's galaxy
# has its core (gz1-sdss Petrosian radii: 0.12-0.15 of the cutout's side, 0.24-0.30 of the crop).
CENTRE_OF_CROP = 1 / 8
# How far (in pixels of the network's input) a masked pixel there may lie from a measured one and
# still be filled. Measured with the compact model, square holes at the centre filled by
# `fill_masked` (depth in network pixels): 300 gz1-sdss validation galaxies as gri FITS cubes (423
# px, 3.3 file pixels a network pixel), 7 x 7 (1.2 deep) 1 label changed, 11 x 11 (1.8) 4, 15 x 15
# (2.4) 6, 21 x 21 (3.3) 12 (filled with sky instead: 62, 124, 177, 201); the 101 px SDSS cutouts
# of real-fits-smoke (0.8 file pixels a network pixel), 3 x 3 (2.5 deep) 2 of 10 labels changed
# and p_spiral moved by up to 0.63; a 3 px NaN column through 10 KiDS cutouts (1.4-1.5 deep), 1
# label of p 0.47 changed, p moved by 0.01-0.08.
MAX_HOLE_DEPTH = 2.0


def _gaussian_sum(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The separable 2-D convolution of (H, W) `values` with kernel x kernel, zero outside."""
    radius = len(kernel) // 2
    for axis in (0, 1):
        padded = np.pad(values, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        n = values.shape[axis]
        values = sum(weight * (padded[i:i + n] if axis == 0 else padded[:, i:i + n])
                     for i, weight in enumerate(kernel))
    return values


def fill_plane(plane: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill the masked pixels of one band from the measured ones around them.

    Args:
        plane: float64 (H, W); measured: bool (H, W), False where the pixel is masked.

    Returns:
        (filled, known): float64 (H, W) with every pixel within reach filled (others left as they
        were), and bool (H, W), the pixels that now hold a value.
    """
    radius = int(4 * FILL_SIGMA)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / FILL_SIGMA) ** 2)
    filled, known = plane.copy(), measured.copy()
    rows, columns = np.nonzero((~measured).any(axis=1))[0], np.nonzero((~measured).any(axis=0))[0]
    if not len(rows):
        return filled, known
    # Only the holes' bounding box and `radius` around it: a fill reads nothing farther (exact, and a
    # NaN column costs a strip, not the image).
    window = (slice(max(rows[0] - radius, 0), rows[-1] + radius + 1),
              slice(max(columns[0] - radius, 0), columns[-1] + radius + 1))
    part, part_known = filled[window], known[window]  # views: filled in place
    for _ in range(FILL_PASSES):
        weight = _gaussian_sum(part_known.astype(np.float64), kernel)
        total = _gaussian_sum(np.where(part_known, part, 0.0), kernel)
        reached = ~part_known & (weight > 1e-3 * kernel.sum() ** 2)  # at least ~0.1% of a full neighbourhood
        part[reached] = total[reached] / weight[reached]
        part_known |= reached
        if part_known.all():
            break
    return filled, known


def fill_masked(cube: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """A band cube with its masked pixels filled: from their neighbours within reach, else with the
    band's median measured value (its sky level, for a cutout that is mostly sky).

    Args:
        cube: float64 (H, W, C) linear flux, NaN or inf where masked; measured: bool (H, W, C),
            `np.isfinite(cube)`, with at least one measured pixel per band.

    Returns:
        float64 (H, W, C), all finite.
    """
    out = np.empty_like(cube)
    for c in range(cube.shape[2]):
        plane, ok = cube[..., c], measured[..., c]
        if ok.all():
            out[..., c] = plane
            continue
        filled, known = fill_plane(plane, ok)  # its copy; masked values are never read
        out[..., c] = filled if known.all() else np.where(known, filled, np.median(plane[ok]))
    return out


def masked_share(measured: np.ndarray, crop_fraction: float) -> float:
    """The share of the centre crop's pixels (those inside the image) masked in at least one band: what
    `fill_masked` made up of what the network reads; 0.0 for a cutout with every pixel measured.

    Args:
        measured: bool (H, W, C), `np.isfinite` of the band cube, False where masked.
        crop_fraction: the centre crop the cutout is read with.
    """
    (top, bottom), (left, right) = crop_spans(measured.shape[0], measured.shape[1], crop_fraction)
    window = measured[top:bottom, left:right]
    if not window.size or window.all():
        return 0.0
    return float(1.0 - window.all(axis=2).mean())


def masked_centre(measured: np.ndarray, crop_fraction: float, size: int) -> str | None:
    """Why a cutout's masked pixels cannot be filled honestly, or None when they can.

    A hole inside the central CENTRE_OF_CROP of the crop is refused when some pixel of it lies
    farther than MAX_HOLE_DEPTH network-input pixels (the crop's side / `size` file pixels each),
    or than the fill's reach (FILL_REACH file pixels), from every measured pixel (the chessboard
    distance).

    Args:
        measured: bool (H, W) or (H, W, C), False where masked (in any band).
        crop_fraction, size: the centre crop and network input side the cutout is read with.
    """
    if measured.all():  # the usual cutout, answered before the reduction over bands (2 ms of a 424 px cube's
        return None  # ~12 ms had gone to it)
    if measured.ndim == 3:
        measured = measured.all(axis=2)
    height, width = measured.shape
    # in file pixels (the crop's side / the network's, per network pixel); never beyond the fill's reach (a
    # 1000 px cutout allowed 31 px, and the middle of a 29 x 29 hole became sky)
    (top, bottom), (left, right) = crop_spans(height, width, crop_fraction)  # along the longer side: the crop's side
    depth = min(int(MAX_HOLE_DEPTH * max(bottom - top, right - left) / size), FILL_REACH)
    (ctop, cbottom), (cleft, cright) = crop_spans(height, width, crop_fraction * CENTRE_OF_CROP)
    hole = ~measured
    if not hole[ctop:cbottom, cleft:cright].any():
        return None
    deep = hole
    for _ in range(depth):  # after k erosions what is left lies more than k pixels from a measured one
        padded = np.pad(deep, 1, constant_values=False)
        deep = np.logical_and.reduce([padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    if not deep[ctop:cbottom, cleft:cright].any():
        return None
    return (f"{int(hole[ctop:cbottom, cleft:cright].sum())} masked (NaN or inf) pixels at the galaxy's centre "
            f"(the central {crop_fraction * CENTRE_OF_CROP:.3g} of each side) leave a hole too large to fill from "
            f"the pixels around it: some lie more than {MAX_HOLE_DEPTH:g} pixels of the network's input "
            f"({depth} of this file's) from a measured pixel")


# A row whose crop had more than this share masked (filled) is named in the run's warning: with the
# compact model, 300 validation galaxies as g, r, i cubes, NaN from the left edge over a share F of the
# crop kept 99.7 / 99.3 / 97.3 / 93.7 / 83.7% of the labels at F = 0.05 / 0.1 / 0.2 / 0.3 / 0.4, random
# 3-pixel bad columns 99.7 / 99.3 / 99.0 / 99.0 / 96.5% (`benchmarks/masked_share.py`, 2-core Zen 4).
MASKED_WARNING = 0.1
MASKED_IDS = 3  # ids a warning names, as OFF_CENTRE_IDS


def beyond_warning(value) -> bool:
    """Whether a row's `masked_fraction` (its text, or the number a catalog reader gives) is above
    MASKED_WARNING; False where there is none (a JPEG row, a catalog older than the column) or it is no number."""
    try:
        return float(value if value not in (None, "") else "nan") > MASKED_WARNING
    except (TypeError, ValueError):
        return False


@dataclass
class MaskedRows:
    """The rows of a run whose crop had more than MASKED_WARNING of its pixels masked and filled: how
    many, the largest share and the first MASKED_IDS ids. A plain record (JSON as `dataclasses.asdict`),
    so the parts of a `--ray` run can be merged, as `galaxy.io.sky.OffCentreRows`."""

    count: int = 0
    largest: float = 0.0
    ids: list = field(default_factory=list)

    def add(self, ident: str, columns: dict) -> None:
        """One classified row: its catalog columns (text), `masked_fraction` among them for a FITS input."""
        value = columns.get(MASKED_COLUMN)
        if beyond_warning(value):
            self.count += 1
            self.largest = max(self.largest, float(value))
            if len(self.ids) < MASKED_IDS:
                self.ids.append(ident)

    def merge(self, other: MaskedRows) -> None:
        """Take in the rows of `other`, which come after these in input order."""
        self.count += other.count
        self.largest = max(self.largest, other.largest)
        self.ids.extend(other.ids[:MASKED_IDS - len(self.ids)])

    def warnings(self) -> list[str]:
        """The run's line about these rows: none when no crop was masked beyond MASKED_WARNING."""
        if not self.count:
            return []
        more = ", ..." if self.count > len(self.ids) else ""
        return [f"{self.count} row{'s' if self.count != 1 else ''}: more than {MASKED_WARNING:.0%} of the pixels the "
                f"network reads were masked (NaN or inf) and filled from their neighbours (largest "
                f"{self.largest:.0%}: id{'s' if len(self.ids) != 1 else ''} {', '.join(self.ids)}{more}): such labels "
                f"are less certain; the catalog's {MASKED_COLUMN} column gives each row's share"]
