"""`InputSpec`: every preprocessing parameter a model was trained with.

One InputSpec travels with the weights in the model card. The reference reader
(`galaxy.images`), the export, and every engine backend read it; no mean/std or size
literal lives anywhere else.

The preprocessing, in order:
  1. decode to float32 (H, W, 3) in [0, 1]; FITS data is first stretched (`galaxy.fits`);
  2. centre crop: keep the central `crop_fraction` of each side (gz1-sdss galaxies sit in
     the middle of a wide field);
  3. resize to `size` x `size` (bilinear with antialiasing, PIL's filter);
  4. normalise per channel: (x - mean) / std;
  5. lay out as `layout` ("NCHW") in `dtype` ("float32").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from galaxy.errors import UsageError


@dataclass(frozen=True)
class FitsStretch:
    """The astronomical stretch applied to FITS pixel data.

    Per image (all bands together, so colours keep their ratios): the finite pixels are
    clipped to the [`clip_low`, `clip_high`] percentiles, scaled to [0, 1], then
    asinh-stretched: y = asinh(x / softening) / asinh(1 / softening). Small `softening`
    lifts faint outskirts (spiral arms) the way SDSS colour composites do (Lupton et al. 2004).
    Non-finite pixels (NaN, inf) are set to the low clip value (sky).
    """

    clip_low: float = 0.5
    clip_high: float = 99.5
    softening: float = 0.1


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
        fits_bands: planes of a 3-D FITS cube used as (R, G, B), zero-based along NAXIS3.
    """

    size: int = 96
    crop_fraction: float = 0.5
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    layout: str = "NCHW"
    dtype: str = "float32"
    fits: FitsStretch = field(default_factory=FitsStretch)
    fits_bands: tuple[int, ...] = (0, 1, 2)

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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        data = dict(data)
        fits = FitsStretch(**data.pop("fits", {}))
        for key in ("mean", "std", "fits_bands"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(fits=fits, **data)


# The tensor contract between export, the TensorRT optimisation profile and every runtime.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_BATCH = 1
OPT_BATCH = 32
MAX_BATCH = 256
