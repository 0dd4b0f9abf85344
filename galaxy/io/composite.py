"""Linear flux -> a survey colour composite (Lupton et al. 2004), whatever the flux unit.

The network learned from SDSS gri JPEG composites: a dark sky a little above black with
faint noise, galaxies mapped through an asinh of the summed intensity with colours kept
(reddest band -> R). FITS data is turned into the same kind of picture, per image:

  1. sky: per band, the sigma-clipped mean and standard deviation of all finite pixels
     (`sky_clip_sigma`, at most `sky_iterations` rounds, stopping early when a round clips
     nothing, as astropy's `sigma_clipped_stats` with cenfunc="mean", stdfunc="std" does;
     later rounds would repeat it); the sky noise `sigma` is the mean over bands (where that
     is 0, a sky of one value in every band, integer data of low range: the quantisation
     noise, `quantisation_noise`). Every band is shifted so that its black point sits
     `black_sigma` noise units below its sky.
  2. unit: pixels are measured in sky-noise units, so counts, nanomaggies, maggies or e-/s
     give the same picture; one common scale for all bands keeps the colours.
  3. curve: the Lupton asinh of the intensity I (the mean of the bands),
     f(I) = asinh(noise_level * u * I) / u, has two anchors read off the data: in the
     linear part one sky-noise unit is `noise_level` (the sky noise of the SDSS JPEGs),
     and the galaxy's peak intensity (the brightest 3x3 mean inside the central
     `peak_region`) lands on `peak_level` (the median peak of the SDSS JPEGs). The
     softening u is solved by bisection (`u_range`, `u_steps` fixed steps).
  4. each band is multiplied by f(I) / I, clipped below at 0, and a pixel whose brightest
     band passes 1 is scaled down with its colour kept.

Steps 3-4 are astropy's `make_lupton_rgb` with Q = 10 sinh(u / 10) and
stretch = Q sigma / (noise_level u) (`lupton_parameters`); the tests hold the two equal.
The DALI graph (`engine.pipelines.dali_fits`) is this same arithmetic in DALI operators.
"""

from __future__ import annotations

import numpy as np

from galaxy.spec import FitsStretch

# The Lupton (2004) constant used by astropy's LuptonAsinhStretch: f = asinh(Q x / s) frac / asinh(frac Q).
LUPTON_FRAC = 0.1


def sky_statistics(cube: np.ndarray, stretch: FitsStretch, valid: np.ndarray | None = None,
                   scale: float = 1.0) -> tuple[np.ndarray, float]:
    """Per-band sky level and the common sky noise of a band cube.

    Args:
        cube: float64 (H, W, C) linear flux, all finite.
        stretch: the clipping threshold and number of iterations.
        valid: bool (H, W, C), the pixels measured (None: all): blank pixels filled with one value
            would pull the clipped spread down (a quarter of the image blank: ~0.75x the noise).
        scale: the statistics are of `cube / scale` (divided band by band as it is read, so that the
            whole cube is never divided: `lupton_composite` maps only a window of it).

    Returns:
        (sky, sigma): float64 (C,) sky levels and the mean over bands of the clipped
        standard deviations (a float, > 0 unless every band's clipped sky is one value: a constant image, or
        quantised data, `quantisation_noise`).

    Each round clips the pixels kept so far (the same pixels, in the same order, as clipping the
    whole band again), and its mean and standard deviation are numpy's `mean` and `std` of them
    written out, so the figures are the same to the last bit at a third of the memory passes.
    """
    sky, std = np.empty(cube.shape[2]), np.empty(cube.shape[2])
    for c in range(cube.shape[2]):
        band = cube[:, :, c]
        measured = None if valid is None else valid[:, :, c]
        # one pass: the band's pixels (strided in the cube) read, divided and laid out contiguously
        kept = band[measured] / scale if measured is not None and measured.any() else (band / scale).ravel()
        mean, deviation, spread = _moments(kept)
        for _ in range(stretch.sky_iterations):
            inside = np.abs(deviation, out=deviation) <= stretch.sky_clip_sigma * spread
            if np.count_nonzero(inside) == len(kept):  # nothing more clipped: later rounds repeat this one
                break
            kept = kept[inside]
            mean, deviation, spread = _moments(kept)
        if spread <= 1e-9 * abs(mean) and kept.min() == kept.max():
            spread = 0.0  # one value (quantised data): its float64 rounding (~1e-16) had been taken as the noise
        sky[c], std[c] = mean, spread
    return sky, float(std.mean())


def quantisation_noise(cube: np.ndarray, valid: np.ndarray | None = None, scale: float = 1.0) -> float:
    """The sky noise of data whose sigma-clipped sky is one value in every band (`sky_statistics` gives 0):
    integer data of low range (a 0-50 count galaxy on a sky of 0), whose noise is below one step of the
    data. Such a sky's noise is at least the rounding that made it one value: the standard deviation of
    a uniform error of one step, step / sqrt(12), where a band's step is the smallest difference between
    its distinct measured values. The mean over bands, as `sky_statistics`'s sigma (a constant band adds
    0); 0 only for an image whose every band holds one value. In the units of `cube / scale`.
    """
    steps = np.zeros(cube.shape[2])
    for c in range(cube.shape[2]):
        band = cube[:, :, c] if valid is None or not valid[:, :, c].any() else cube[:, :, c][valid[:, :, c]]
        distinct = np.unique(band)
        if len(distinct) > 1:
            steps[c] = np.diff(distinct).min() / scale
    return float(steps.mean() / np.sqrt(12.0))


def _moments(values: np.ndarray) -> tuple[float, np.ndarray, float]:
    """The mean and standard deviation of a 1-D array as `values.mean()` and `values.std()` compute them,
    and `values` less the mean (which the next clipping round tests)."""
    mean = np.add.reduce(values) / len(values)
    deviation = values - mean
    return mean, deviation, np.sqrt(np.add.reduce(deviation * deviation) / len(values))


def central_span(n: int, fraction: float) -> tuple[int, int]:
    """[first, end) of the central `fraction` of n pixels, rounded as DALI's relative slice rounds
    them, so both pick the same pixels."""
    return int(np.floor(n * (1 - fraction) / 2 + 0.5)), int(np.floor(n * (1 + fraction) / 2 + 0.5))


def crop_side(height: int, width: int, crop_fraction: float) -> float:
    """The side, in pixels, of the square centre crop the network reads: `crop_fraction` of the longer
    side. A cutout cut short at a frame's edge keeps its pixel scale (the same galaxy fills the same
    part of the crop as in a whole cutout); a square one is cropped as before, each side alike."""
    return crop_fraction * max(height, width)


def inside_share(height: int, width: int, crop_fraction: float) -> float:
    """The share of the square centre crop (`crop_side`) that lies inside a height x width image: 1 for
    every square image, less where the square passes a short side (the rest reads as 0)."""
    side = crop_side(height, width, crop_fraction)
    return min(side, height) * min(side, width) / side ** 2


def crop_spans(height: int, width: int, crop_fraction: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)): the pixels of the square centre crop (`crop_side`) inside the
    image, rounded as `central_span` rounds them (for a square image, its central span of each side)."""
    longer, side = max(height, width), crop_side(height, width, crop_fraction)

    def span(n):  # the longer side exactly as central_span rounds it (n - f n and n (1 - f) round apart at .5)
        if n == longer:
            return central_span(n, crop_fraction)
        return max(0, int(np.floor((n - side) / 2 + 0.5))), min(n, int(np.floor((n + side) / 2 + 0.5)))

    return span(height), span(width)


def box3_peak(intensity: np.ndarray, region: float, origin: tuple[int, int] = (0, 0),
              shape: tuple[int, int] | None = None) -> float:
    """The largest 3x3 mean of a (H, W) image inside its central `region` fraction of each side.

    The 3x3 mean uses edge-replicated borders, so one hot pixel does not set the peak.
    `intensity` may be the part of a `shape` image whose top-left pixel is `origin`, holding
    the region and one pixel around it (or the image's edge): the same peak comes out.
    """
    height, width = intensity.shape
    padded = np.pad(intensity, 1, mode="edge")
    smooth = sum(padded[i:i + height, j:j + width] for i in range(3) for j in range(3)) / 9.0
    full_height, full_width = shape or intensity.shape
    (top, bottom), (left, right) = central_span(full_height, region), central_span(full_width, region)
    return float(smooth[top - origin[0]:bottom - origin[0], left - origin[1]:right - origin[1]].max())


def resample_reach(height: int, width: int, crop_fraction: float, size: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): the pixels `galaxy.io.images.crop_resize` can read for a centre crop
    of `crop_fraction` (the square of `crop_side`) resized to `size` (the crop box, widened by the antialiased bilinear filter's
    reach, PIL's support of max(1, scale) pixels, and 2 pixels of rounding), within the image."""
    kept = crop_side(height, width, crop_fraction)

    def reach(n):
        margin = int(np.ceil(max(1.0, kept / size))) + 2
        return max(0, int(np.floor((n - kept) / 2)) - margin), min(n, int(np.ceil((n + kept) / 2)) + margin)

    (top, bottom), (left, right) = reach(height), reach(width)
    return top, bottom, left, right


def solve_softening(peak: float, stretch: FitsStretch) -> float:
    """The softening u with asinh(noise_level u peak) / u = peak_level (bisection in log u).

    Where even a linear curve leaves the peak below `peak_level` (a faint galaxy), the
    smallest u of `u_range` is returned: the curve is then nearly linear.
    """
    lo, hi = np.log(stretch.u_range[0]), np.log(stretch.u_range[1])
    scaled = stretch.noise_level * peak
    for _ in range(stretch.u_steps):
        mid = 0.5 * (lo + hi)
        u = np.exp(mid)
        if np.arcsinh(scaled * u) / u > stretch.peak_level:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def lupton_parameters(sky: np.ndarray, sigma: float, u: float, stretch: FitsStretch) -> dict:
    """The same mapping as keyword arguments of astropy's `make_lupton_rgb` (for checks)."""
    q = np.sinh(LUPTON_FRAC * u) / LUPTON_FRAC
    return {"minimum": list(sky - stretch.black_sigma * sigma), "Q": float(q),
            "stretch": float(q * sigma / (stretch.noise_level * u))}


def _band_reduce(ufunc, cube: np.ndarray) -> np.ndarray:
    """`ufunc` folded over the bands of an (H, W, C) cube, first band first: (H, W)."""
    out = cube[:, :, 0].copy()
    for c in range(1, cube.shape[2]):
        ufunc(out, cube[:, :, c], out=out)
    return out


def lupton_composite(cube: np.ndarray, stretch: FitsStretch, valid: np.ndarray | None = None,
                     window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Sky-subtract and Lupton-map a linear band cube.

    Args:
        cube: float (H, W, C) linear flux in any unit, bands in display order (R, G, B; one
            band gives a grey picture); all values finite.
        stretch: the composite's parameters (the InputSpec's FITS section).
        valid: bool (H, W, C), the pixels that were measured (blank ones filled in; None: all),
            the only ones the sky statistics use.
        window: (top, bottom, left, right), the only pixels wanted (`resample_reach` of a
            centre crop): the sky statistics are still of the whole image, the curve's peak
            still the central region's, so the wanted pixels come out as in the whole
            composite, and the others are 0 (a 423 px cube cropped to half its side: ~2x
            faster). None: every pixel.

    Returns:
        float32 (H, W, C) in [0, 1].

    Raises:
        ValueError: the image is constant (no sky noise to measure). Where only the clipped sky is one
            value (quantised data), its noise is the quantisation's (`quantisation_noise`).
    """
    cube = np.asarray(cube, dtype=np.float64)
    scale = max(cube.max(), -cube.min())  # the largest |pixel|
    if not scale > 0:
        raise ValueError("image is constant (every pixel is 0)")
    # unit-free from here on (cube / scale; also keeps squares far from float underflow), divided only
    # where it is read: band by band for the sky statistics, then the window the curve maps
    sky, sigma = sky_statistics(cube, stretch, valid, scale)
    if not sigma > 0:  # the clipped sky is one value in every band: quantised data (or a constant image)
        sigma = quantisation_noise(cube, valid, scale)
    if not sigma > 0:
        raise ValueError("image is constant: every band holds one value, no sky noise to scale by")
    height, width = cube.shape[:2]
    top, bottom, left, right = _mapped_box(height, width, stretch.peak_region, window)
    x = (cube[top:bottom, left:right] / scale - sky) / sigma + stretch.black_sigma
    intensity = _band_reduce(np.add, x) / x.shape[2]  # = x.mean(axis=2), without numpy's slow reduction over a length-3 axis
    u = solve_softening(box3_peak(intensity, stretch.peak_region, (top, left), (height, width)), stretch)
    f = np.arcsinh(stretch.noise_level * u * intensity) / u
    ratio = np.where(intensity > 0, f / np.where(intensity > 0, intensity, 1.0), 0.0)
    out = np.clip(x * ratio[:, :, None], 0.0, None)
    brightest = _band_reduce(np.maximum, out)[:, :, None]
    out = np.where(brightest > 1.0, out / np.where(brightest > 1.0, brightest, 1.0), out).astype(np.float32)
    if window is None:
        return out
    whole = np.zeros(cube.shape, dtype=np.float32)
    whole[top:bottom, left:right] = out
    return whole


def _mapped_box(height: int, width: int, peak_region: float, window) -> tuple[int, int, int, int]:
    """The pixels the curve maps: the whole image, or `window` together with the peak's region and
    the one pixel around it that its 3x3 mean reads."""
    if window is None:
        return 0, height, 0, width
    (peak_top, peak_bottom), (peak_left, peak_right) = central_span(height, peak_region), central_span(width, peak_region)
    top, bottom, left, right = window
    return (max(0, min(top, peak_top - 1)), min(height, max(bottom, peak_bottom + 1)),
            max(0, min(left, peak_left - 1)), min(width, max(right, peak_right + 1)))


def invert_composite(rgb: np.ndarray, softening: float, mode: str = "lupton") -> np.ndarray:
    """Undo an asinh colour composite: display RGB in [0, 1] -> linear flux (a simulation aid).

    `mode` "lupton" inverts y = x f(I) / I with f(I) = asinh(I / a) / asinh(1 / a) on the
    intensity (colours kept); "channel" inverts y = asinh(x / a) / asinh(1 / a) per band.
    Used to turn survey JPEGs back into what their flux looked like (the FITS round trip).

    Returns:
        float64 (H, W, C), 1 where the composite was white.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    norm = np.arcsinh(1.0 / softening)
    if mode == "channel":
        return softening * np.sinh(rgb * norm)
    if mode != "lupton":
        raise ValueError(f"mode {mode!r} is not 'lupton' or 'channel'")
    intensity = rgb.mean(axis=2, keepdims=True)
    linear = softening * np.sinh(intensity * norm)
    return np.where(intensity > 0, rgb * linear / np.where(intensity > 0, intensity, 1.0), 0.0)
