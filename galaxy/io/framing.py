"""How large the galaxy sits in its cutout: its Petrosian radius as a fraction of the side.

Every survey frames its cutouts in its own way (pixel scale, or a cutout scaled to each galaxy's
Petrosian radius with its own factor), and a network sees a galaxy at the scale it was trained on
only when the centre crop matches. The shipped models crop the central half of an SDSS Galaxy Zoo 1
cutout; the Galaxy Zoo 2 cutouts of the same survey show galaxies about 1.2 times larger (measured
with this module, README "Framing").

The Petrosian radius (eta = 0.2, the SDSS definition: where the surface brightness of an annulus falls
to 0.2 of the mean inside it) depends on the shape of the light profile, not on its brightness or on
a noise threshold, so it scales exactly with the image: a cutout zoomed 1.25x measures 1.24x. It is
measured in display space (the stretched RGB the network reads, `read_cutout`), background from the
cutout's border, out to `REGION` of the side. One galaxy's value is rough (a neighbour, a faint
disk); the median over a few hundred cutouts is what a survey's framing is compared by
(`compare_framing`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from galaxy.cores import usable_cores
from galaxy.errors import ImageReadError, UsageError
from galaxy.io.images import read_cutout

ETA = 0.2  # Petrosian ratio (SDSS)
REGION = 0.35  # largest radius searched (fraction of the side); a galaxy larger than that counts as REGION
BORDER = 0.08  # width of the border strips the background and noise are measured on
THRESHOLD = 3.0  # the centre must rise this many noise sigmas above the background to count as a galaxy
SAMPLE = 256  # cutouts measured by default (the median settles well before that)
FEW = 16  # fewer measured galaxies than this give a median too uncertain to set a crop by


@lru_cache(maxsize=8)
def _annuli(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.hypot(y - (height - 1) / 2, x - (width - 1) / 2).astype(np.int64)


def petrosian_fraction(pixels: np.ndarray) -> float:
    """The Petrosian radius of the central source as a fraction of the cutout's longer side, the side
    the network's square crop is a fraction of (`galaxy.io.composite.crop_side`; for a square cutout,
    its side), measured within the shorter one.

    Args:
        pixels: float (H, W) or (H, W, C) display-scaled image, any range.

    Returns:
        r_P / max(H, W); REGION x min(H, W) / max(H, W) when the profile has not fallen to ETA within
        REGION of the shorter side; nan when the centre does not rise above the noise (no galaxy there).
    """
    light = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    light = np.asarray(light, dtype=np.float64)
    height, width = light.shape
    side = min(height, width)
    edge = max(1, int(round(BORDER * side)))
    border = np.concatenate([light[:edge].ravel(), light[-edge:].ravel(),
                             light[edge:-edge, :edge].ravel(), light[edge:-edge, -edge:].ravel()])
    background = np.median(border)
    noise = max(1.4826 * np.median(np.abs(border - background)), 1e-3)  # floor: a JPEG's flat black sky
    rings = int(REGION * side)
    annulus = _annuli(height, width)
    inside = annulus < rings
    sums = np.bincount(annulus[inside], (light - background)[inside], minlength=rings)
    counts = np.maximum(np.bincount(annulus[inside], minlength=rings), 1)
    mean_within = np.cumsum(sums) / np.cumsum(counts)
    if rings < 4 or mean_within[2] <= THRESHOLD * noise:
        return float("nan")
    ratio = (sums / counts)[1:] / np.maximum(mean_within[:-1], 1e-12)  # ring r+1 against the mean inside it
    below = np.nonzero(ratio[1:] < ETA)[0] + 1  # from ring 2: the first rings are a few pixels
    if not below.size:
        return search_limit(height, width)
    k = below[0]
    ring = k + 1 - (ETA - ratio[k]) / (ratio[k - 1] - ratio[k])  # linear between rings k and k + 1
    return float((ring + 0.5) / max(height, width))


def search_limit(height: int, width: int) -> float:
    """What `petrosian_fraction` gives a galaxy larger than its search: `REGION` of the shorter side, as a
    fraction of the longer."""
    return REGION * min(height, width) / max(height, width)


def summarise(fractions) -> dict:
    """Median and quartiles of Petrosian fractions (nan ignored), with how many were measured."""
    values = np.asarray(list(fractions), dtype=np.float64)
    good = values[np.isfinite(values)]
    if good.size == 0:
        return {"images": int(values.size), "measured": 0}
    p25, median, p75 = np.percentile(good, [25, 50, 75])
    return {"images": int(values.size), "measured": int(good.size), "p25": round(float(p25), 5),
            "median": round(float(median), 5), "p75": round(float(p75), 5)}


def compare_framing(measured: dict, reference: dict, reference_crop: float) -> dict:
    """How the measured cutouts' framing compares with a model's training framing.

    Args:
        measured, reference: `summarise` results (the user's cutouts, the model's training images).
        reference_crop: the model's centre crop fraction.

    Returns:
        {"scale": how many times larger the galaxies appear than in training,
         "crop_fraction": the crop that shows them at the training scale (at most 1),
         "lower_bound": whether half or more of the galaxies are larger than the search (`measured`'s
         "at_limit", `measure_files`), so the median and `scale` are lower bounds (printed as measurements
         until 2026-11-30),
         "at_crop_1": how many times the training size the galaxies still appear through the whole cutout
         where no crop reaches the training scale, else None (a crop of 1 had been said to match)}.
    """
    scale = measured["median"] / reference["median"]
    return {"scale": round(scale, 4), "crop_fraction": round(min(1.0, max(0.05, reference_crop * scale)), 3),
            "lower_bound": bool(measured.get("at_limit")) and 2 * measured["at_limit"] >= measured["measured"],
            "at_crop_1": round(reference_crop * scale, 3) if reference_crop * scale > 1 else None}


def measure_files(paths, spec, workers: int = 0, hdu=None,
                  limits: list | None = None) -> tuple[list[float], list[tuple[str, str]]]:
    """Petrosian fractions of cutout files, read as the network reads them (`read_cutout`, `spec`'s stretch).

    Args:
        paths: image files (JPEG, PNG, FITS).
        spec: the InputSpec that supplies the FITS stretch and bands.
        workers: reading threads (0: one per CPU).
        limits: if given, one bool per path is appended: whether its galaxy is larger than the search
            (`search_limit`: its fraction is a lower bound).

    Returns:
        (fractions in the order of `paths`, nan for unreadable files; [(path, reason)] of those, also in
        the order of `paths`, so the first named is the first listed).
    """
    def one(path):
        try:
            pixels = read_cutout(path, spec, hdu)[0]
        except ImageReadError as exc:
            return float("nan"), (str(path), exc.reason), False
        fraction = petrosian_fraction(pixels)
        return fraction, None, fraction == search_limit(*pixels.shape[:2])

    with ThreadPoolExecutor(max_workers=workers or usable_cores()) as pool:
        results = list(pool.map(one, paths))
    if limits is not None:
        limits.extend(capped for _, _, capped in results)
    return [fraction for fraction, _, _ in results], [failure for _, failure, _ in results if failure]


def card_framing(card) -> dict:
    """The training framing a model card records (`training.framing`, a `summarise` result).

    Raises:
        UsageError: the card records none (a model trained before cards recorded it).
    """
    reference = card.training.get("framing", {})
    if "median" not in reference:
        raise UsageError(f"the card of {card.name} records no training framing (training.framing) to compare "
                         "the cutouts with; give the crop as a number (galaxy classify --crop-fraction F)")
    return reference


def framing_report(card, paths, spec, workers: int = 0, hdu=None) -> dict:
    """How the galaxies of `paths` are framed against `card`'s training cutouts: what `galaxy framing`
    prints and `classify --crop-fraction auto` reads with.

    Returns:
        {"model", "model_crop_fraction", "training", "measured" (`summarise` of `paths`), "unreadable"
        ([{"path", "reason"}]), "no_galaxy" (the readable cutouts that show no galaxy above the noise
        near their centre, not measured: [path]), and, when any cutout was measured, "scale" and
        "crop_fraction" (`compare_framing`)}.

    Raises:
        UsageError: the card records no training framing (checked before any file is read).
    """
    reference = card_framing(card)
    limits: list[bool] = []
    fractions, failures = measure_files(paths, spec, workers, hdu, limits)
    measured = summarise(fractions)
    if measured["measured"]:
        measured["at_limit"] = sum(limits)  # galaxies larger than the search: their value is a lower bound
    unreadable = {p for p, _ in failures}
    report = {"model": card.name, "model_crop_fraction": card.input_spec.crop_fraction, "training": reference,
              "measured": measured, "unreadable": [{"path": p, "reason": r} for p, r in failures],
              "no_galaxy": [str(p) for p, f in zip(paths, fractions) if f != f and str(p) not in unreadable]}
    if measured["measured"]:
        report.update(compare_framing(measured, reference, card.input_spec.crop_fraction))
    return report


def nothing_measured(listed: int, unreadable: list[dict]) -> str:
    """Why none of `listed` cutouts was measured: unreadable files (the first named) or no galaxy in them."""
    first = f"{unreadable[0]['path']}: {unreadable[0]['reason']}" if unreadable else ""
    if len(unreadable) == listed == 1:
        return f"the cutout could not be read: {first}"
    if len(unreadable) == listed:
        return f"none of the {listed} cutouts could be read, e.g. {first}"
    text = f"none of the {listed - len(unreadable)} readable cutouts shows a galaxy above the noise near the centre"
    return text + (f"; {len(unreadable)} more could not be read, e.g. {first}" if unreadable else "")
