"""`InputSpec`: every preprocessing parameter a model was trained with.

One InputSpec travels with the weights in the model card. The reference reader
(`galaxy.io.images`), the export, and every engine backend read it; no mean/std or size
literal lives anywhere else.

The preprocessing, in order:
  1. decode to float32 (H, W, 3) in [0, 1]; FITS flux is first made a colour composite
     (`galaxy.io.composite`);
  2. centre crop: keep the central `crop_fraction` of each side (gz1-sdss galaxies sit in
     the middle of a wide field);
  3. resize to `size` x `size` (bilinear with antialiasing, PIL's filter);
  4. normalise per channel: (x - mean) / std;
  5. lay out as `layout` ("NCHW") in `dtype` ("float32").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from galaxy.errors import UsageError

log = logging.getLogger(__name__)


# Keys of FitsStretch that galaxy-engine 0.1 cards hold (its percentile stretch): read, then dropped.
LEGACY_FITS_KEYS = ("clip_low", "clip_high", "softening")


@dataclass(frozen=True)
class FitsStretch:
    """How FITS flux becomes a colour composite like the survey JPEGs (`galaxy.io.composite`).

    Sky and noise come from sigma-clipped statistics (`sky_clip_sigma`, `sky_iterations`);
    each band's black point sits `black_sigma` sky-noise units below its sky; the Lupton et
    al. (2004) asinh of the intensity shows one noise unit as `noise_level` and the galaxy's
    peak (brightest 3x3 mean in the central `peak_region`) as `peak_level`, its softening
    solved in `u_range` by `u_steps` bisection steps. `noise_level` and `peak_level` are the
    median sky noise and galaxy peak of the SDSS JPEGs the model learned from.
    """

    sky_clip_sigma: float = 3.0
    sky_iterations: int = 5
    black_sigma: float = 1.26
    noise_level: float = 0.0135
    peak_level: float = 0.64
    peak_region: float = 0.5
    u_range: tuple[float, float] = (0.3, 60.0)
    u_steps: int = 24

    def __post_init__(self):
        if not (0 < self.noise_level < self.peak_level <= 1 and 0 < self.peak_region <= 1
                and 0 < self.u_range[0] < self.u_range[1] and self.sky_iterations >= 0
                and self.sky_clip_sigma > 0 and self.u_steps > 0):
            raise UsageError(f"FITS composite parameters out of range: {self}")

    @classmethod
    def from_dict(cls, data: dict) -> FitsStretch:
        legacy = set(LEGACY_FITS_KEYS) & set(data)
        if legacy:  # the percentile stretch of galaxy-engine 0.1, replaced by the composite
            log.warning("model card has the old FITS percentile stretch (%s); using the Lupton composite",
                        ", ".join(sorted(legacy)))
        data = {k: (tuple(v) if k == "u_range" else v) for k, v in data.items() if k not in legacy}
        return cls(**data)


# What a recorded InputSpec must hold: the weights were trained on pixels made with these.
REQUIRED_KEYS = ("size", "crop_fraction", "mean", "std")


@dataclass(frozen=True)
class InputSpec:
    """Preprocessing parameters of one model.

    Attributes:
        size: side of the square network input, pixels.
        crop_fraction: fraction of each side kept by the centre crop, in (0, 1].
        channels: number of input channels (3: RGB; single-band data is repeated).
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided out after the mean.
        layout: tensor layout handed to the network.
        dtype: tensor dtype handed to the network.
        fits: the stretch used for FITS inputs.
        fits_bands: the FITS bands shown as (R, G, B): band names ("i", "r", "g") or
            zero-based plane indices; empty: read the order from the headers (FILTER,
            BANDn), else take the planes to be in wavelength order (`galaxy.io.bands`).
    """

    size: int = 96
    crop_fraction: float = 0.5
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    layout: str = "NCHW"
    dtype: str = "float32"
    fits: FitsStretch = field(default_factory=FitsStretch)
    fits_bands: tuple[int | str, ...] = ()

    def __post_init__(self):
        if not 8 <= self.size <= 1024:
            raise UsageError(f"input size {self.size} is not in 8..1024 pixels")
        if not 0 < self.crop_fraction <= 1:
            raise UsageError(f"crop fraction {self.crop_fraction} is not in (0, 1]")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UsageError(f"mean/std need {self.channels} values, got {self.mean} / {self.std}")
        if any(s <= 0 for s in self.std):
            raise UsageError(f"std values must be positive, got {self.std}")
        if self.layout != "NCHW" or self.dtype != "float32":
            raise UsageError(f"only NCHW float32 is supported, got {self.layout} {self.dtype}")

    def replace(self, **changes) -> InputSpec:
        return dataclasses.replace(self, **changes)

    def with_crop(self, crop_fraction: float | None) -> InputSpec:
        """This spec read through another centre crop (`--crop-fraction`); None keeps its own."""
        return self if crop_fraction is None else self.replace(crop_fraction=float(crop_fraction))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        """The spec a card (or a catalog's metadata) records.

        Raises:
            ValueError: a key the weights depend on (REQUIRED_KEYS) is missing; the dataclass's defaults
                are for building a new spec, never a stand-in for what a model was trained with.
        """
        data = dict(data)
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise ValueError(f"its input_spec lacks {', '.join(missing)} (the preprocessing the weights were "
                             "trained with; no default stands in for it)")
        if "softening" in data.get("fits", {}):  # 0.1 cards (LEGACY_FITS_KEYS): (0, 1, 2) meant "planes as stored"
            data.pop("fits_bands", None)
        fits = FitsStretch.from_dict(data.pop("fits", {}))
        for key in ("mean", "std", "fits_bands"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(fits=fits, **data)


def is_number(value) -> bool:
    """An int or a float as JSON gives them, not a bool (True would pass isinstance(value, int))."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_spec_shape(data) -> None:
    """The kinds of value `InputSpec.from_dict` relies on, in a card or a catalog's metadata edited by
    hand: each key one the spec has, numbers where it takes a number, lists where a tuple, text where
    text, an object for `fits` (they gave "'str' object has no attribute 'items'" or "'<' not supported
    between instances of 'int' and 'str'"). Ranges are `__post_init__`'s.

    Raises:
        ValueError: naming the key and its value.
    """
    if not isinstance(data, dict):
        raise ValueError(f"its input_spec {data!r} is not an object")
    _check_fields(data, InputSpec(), "input_spec")
    if "fits" in data:
        _check_fields(data["fits"], FitsStretch(), "input_spec fits", LEGACY_FITS_KEYS)


def _check_fields(data, default, where: str, legacy=()) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"its {where} {data!r} is not an object")
    for key, value in data.items():
        if key in legacy:
            continue
        if not any(f.name == key for f in dataclasses.fields(default)):
            raise ValueError(f"its {where} has {key!r}, which is not a preprocessing parameter")
        kind = getattr(default, key)
        if isinstance(kind, tuple):
            names = key == "fits_bands"  # (band numbers or names)
            good = isinstance(value, (list, tuple)) and all(is_number(v) or names and isinstance(v, str) for v in value)
            what = "a list of band numbers or names" if names else "a list of numbers"
        elif isinstance(kind, str):
            good, what = isinstance(value, str), "text"
        elif isinstance(kind, (int, float)):
            good, what = is_number(value), "a number"
        else:
            continue  # `fits`: checked by the caller
        if not good:
            raise ValueError(f"its {where} {key} {value!r} is not {what}")


# The tensor contract between export, the TensorRT optimisation profile and every runtime.
# The smallest cutout side (pixels) any reader takes: the centre crop of a 16 px cutout is 8 px,
# already upsampled 8x for the compact model; smaller "cutouts" (5 x 5 noise, a 3 x 2000 strip) were
# given confident labels.
MIN_SIDE = 16
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_BATCH = 1
OPT_BATCH = 32
MAX_BATCH = 256


def too_small(width: int, height: int) -> str:
    """The one refusal of an image below MIN_SIDE, for every reader."""
    return f"{width} x {height} pixels is too small for a cutout (at least {MIN_SIDE} on each side)"
