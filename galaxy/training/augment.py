"""Training augmentations for survey robustness, vectorised in torch over whole batches.

Every transform takes a float32 batch (N, 3, H, W) of display pixels in [0, 1] and a
`torch.Generator` (a CPU one: the random draws are made on the CPU, so a seed fixes the result
whatever the device), and works on the batch where it lies: on the CPU per batch (a python loop per
image would cost more than the network on 2 cores), on the GPU when training there (the CPU
would otherwise starve it).

Geometry (`geometric_views`): one affine resampling per image from a cached wider field:
  zoom    the crop fraction drawn per image from `zoom_range` (e.g. 0.35-0.65 of the side,
          around the spec's 0.5), so the network sees galaxies at several pixel scales; or, with
          `apparent_size`, set per image from the galaxy's own Petrosian radius so that the radius
          spans a log-uniform draw from that range of the crop: every galaxy is then seen at the
          same range of apparent sizes, and how large a class sits in the training survey's
          cutouts (a property of how that survey framed them, not of the galaxies) is no cue;
  rotate  any angle (D4 is then included); without it, one of the 8 D4 symmetries;
plus a flip and a translation of up to `jitter` of the crop.

Photometry (`photometric`), in this order:
  curve   the JPEG pixel v is taken as an asinh composite with a random softening a1 and
          undone (lin = sinh(v asinh(1/a1)) a1), per-band gains (0.8-1.25) and a small sky
          offset are applied, then it is re-stretched with another softening a2
          (asinh(lin/a2)/asinh(1/a2)); a1, a2 log-uniform in [0.01, 1]. This spans the colour
          composites other surveys and FITS stretches make (half of the images keep theirs);
  flux    a global brightness factor, log-uniform in [0.7, 1.4] (in linear units with curve);
  blur    a Gaussian PSF, sigma uniform in [0, 1.2] px, applied to half of the images
          (in linear units with curve, where a PSF acts);
  noise   Gaussian pixel noise, sigma uniform in [0, 0.03] of the display range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from galaxy.config import AUGMENTATIONS
from galaxy.errors import UsageError
CURVE_SOFTENING = (0.01, 1.0)
CURVE_PROBABILITY = 0.5
BAND_GAIN = (0.8, 1.25)
SKY_OFFSET = 0.003
FLUX_SCALE = (0.7, 1.4)
BLUR_SIGMA = 1.2
BLUR_PROBABILITY = 0.5
NOISE_SIGMA = 0.03
APPARENT_CROP_MIN = 0.25  # tightest crop `apparent_size` may ask for (a very small galaxy)
CONSISTENCY_ZOOM = (1.1, 1.5)  # how many times larger the scale-consistency view shows a galaxy


def parse_augmentations(text: str) -> tuple[str, ...]:
    """`--augment` text -> names: "all", "none", or a comma list of AUGMENTATIONS.

    Raises:
        UsageError: an unknown name.
    """
    text = text.strip().lower()
    if text == "all":
        return AUGMENTATIONS
    if text in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise UsageError(f"unknown augmentation {unknown[0]!r}; expected 'all', 'none' or some of "
                         f"{', '.join(AUGMENTATIONS)}")
    return tuple(n for n in AUGMENTATIONS if n in names)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _log_uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.exp(_uniform(n, math.log(low), math.log(high), generator))


def view_crops(n: int, crop_fraction: float, cache_fraction: float, zoom_range: tuple[float, float] | None,
               generator: torch.Generator, framing: torch.Tensor | None = None,
               apparent_size: tuple[float, float] | None = None) -> torch.Tensor:
    """The crop fraction of each of `n` views (arguments as `geometric_views`): float32 (N,)."""
    crop = (_uniform(n, *zoom_range, generator) if zoom_range else torch.full((n,), float(crop_fraction)))
    if zoom_range and apparent_size and framing is not None:
        by_size = framing.float() / _log_uniform(n, *apparent_size, generator)
        by_size = by_size.clamp(APPARENT_CROP_MIN, cache_fraction)
        crop = torch.where(torch.isfinite(by_size), by_size, crop)
    return crop


def larger_view_crops(crop: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Crops that show the galaxies of views cropped at `crop` CONSISTENCY_ZOOM (log-uniform) times larger,
    for the scale-consistency loss: float32 (N,), at least APPARENT_CROP_MIN."""
    return (crop / _log_uniform(len(crop), *CONSISTENCY_ZOOM, generator)).clamp_min(APPARENT_CROP_MIN)


def geometric_views(cache: torch.Tensor, size: int, crop_fraction: float, cache_fraction: float,
                    zoom_range: tuple[float, float] | None, rotate: bool, jitter: float,
                    generator: torch.Generator, framing: torch.Tensor | None = None,
                    apparent_size: tuple[float, float] | None = None, crop: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Random views of cached wide fields, one affine resampling each.

    Args:
        cache: (N, 3, S, S) float16/float32 in [0, 1], each the central `cache_fraction` of a cutout.
        size: output side, pixels.
        crop_fraction: the spec's crop (fraction of the cutout side) used when `zoom_range` is None.
        cache_fraction: the fraction of the cutout side the cache holds.
        zoom_range: (low, high) crop fractions drawn uniformly per image, or None.
        rotate: any angle; otherwise a multiple of 90 degrees.
        jitter: largest shift of the crop centre, as a fraction of the crop's half-side (0.1: 5% of the side).
        generator: the random source.
        framing: float (N,) each galaxy's Petrosian radius as a fraction of its cutout's side
            (nan: not measured), used with `apparent_size` and `zoom_range`.
        apparent_size: (low, high) Petrosian radius as a fraction of the crop, drawn log-uniformly per
            image; the crop is framing / draw, kept within [APPARENT_CROP_MIN, cache_fraction]. Images
            without a framing keep the `zoom_range` draw.
        crop: float32 (N,) crop fractions to use instead of drawing them (`view_crops`).

    Returns:
        float32 (N, 3, size, size). Parts of a view outside the cached field are mirrored in
        (the sky around a galaxy looks like more sky).
    """
    n = cache.shape[0]
    if crop is None:
        crop = view_crops(n, crop_fraction, cache_fraction, zoom_range, generator, framing, apparent_size)
    scale = crop / cache_fraction  # half-width of the view in the cache's [-1, 1] coordinates
    if rotate:
        angle = _uniform(n, 0.0, 2 * math.pi, generator)
    else:
        angle = torch.randint(0, 4, (n,), generator=generator).float() * (math.pi / 2)
    flip = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
    shift = (torch.rand((n, 2), generator=generator) * 2 - 1) * jitter * scale[:, None]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
                         torch.stack([sin * flip, cos, shift[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(cache.device), [n, cache.shape[1], size, size], align_corners=False)
    return F.grid_sample(cache.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (pixels; 0 leaves the image as it is)."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0).to(x.device)  # (N*C, K)
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    return flat.reshape(n, c, h, w)


def _generator_on(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """`generator` itself on the CPU; elsewhere a generator of that device seeded from it."""
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _asinh_scale(softening: torch.Tensor) -> torch.Tensor:
    return torch.asinh(1.0 / softening).view(-1, 1, 1, 1)


def photometric(x: torch.Tensor, names: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """Apply the photometric augmentations of `names` (see the module docstring).

    The transcendental curve and the blur are computed only for the images drawn for them
    (half each): on 2 CPU cores they would otherwise cost a third of a training step.

    Args:
        x: float32 (N, 3, H, W) display pixels in [0, 1].
        names: which of "curve", "flux", "blur", "noise" to apply.
        generator: the random source, drawn in a fixed order; the noise draws its N x 3 x H x W normals only
            when "noise" is in `names`, so turning noise on or off shifts every later draw of the run (a
            noise on/off comparison is not paired image by image; kept so, as shipped commands replay).

    Returns:
        float32 (N, 3, H, W) in [0, 1].
    """
    n = x.shape[0]
    curve = torch.nonzero(torch.rand(n, generator=generator) < CURVE_PROBABILITY).flatten()
    a1 = _log_uniform(n, *CURVE_SOFTENING, generator)[curve]
    a2 = _log_uniform(n, *CURVE_SOFTENING, generator)[curve]
    gains = _log_uniform(n * 3, *BAND_GAIN, generator).view(n, 3, 1, 1)[curve]
    sky = _uniform(n, -SKY_OFFSET, SKY_OFFSET, generator).view(n, 1, 1, 1)[curve]
    flux = _log_uniform(n, *FLUX_SCALE, generator).view(n, 1, 1, 1)
    blurred = torch.nonzero(torch.rand(n, generator=generator) < BLUR_PROBABILITY).flatten()
    sigma = _uniform(n, 0.0, BLUR_SIGMA, generator)[blurred]
    noise_sigma = _uniform(n, 0.0, NOISE_SIGMA, generator).view(n, 1, 1, 1)
    on = x.device
    curve, a1, a2, gains, sky, flux, blurred, noise_sigma = (
        t.to(on) for t in (curve, a1, a2, gains, sky, flux, blurred, noise_sigma))
    x = x.clone()
    use_curve = "curve" in names and len(curve) > 0
    if use_curve:  # to linear units: undo an asinh composite of softening a1, then colour gains and sky
        x[curve] = torch.sinh(x[curve] * _asinh_scale(a1)) * a1.view(-1, 1, 1, 1) * gains + sky
    if "flux" in names:
        x = x * flux
    if "blur" in names and len(blurred) > 0:
        x[blurred] = _gaussian_blur(x[blurred], sigma)
    if use_curve:  # back to display units with another softening a2
        x[curve] = torch.asinh(x[curve] / a2.view(-1, 1, 1, 1)) / _asinh_scale(a2)
    x = x.clamp_(0.0, 1.0)
    if "noise" in names:
        noise = torch.empty_like(x).normal_(generator=_generator_on(on, generator))
        x = x.add_(noise.mul_(noise_sigma)).clamp_(0.0, 1.0)
    return x
