"""Training augmentations: shapes, ranges, determinism, and that each switch does what it says."""

import pytest
import torch

from galaxy.training.augment import geometric_views, parse_augmentations, photometric
from galaxy.config import AUGMENTATIONS
from galaxy.errors import UsageError
from galaxy.training.image_cache import build_cache
from galaxy.training.predict import d4_batch
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def caches():
    paths = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:8]
    return build_cache(paths, 0.7, 67, 2, False), build_cache(paths, 0.5, 48, 2, False).float()


def test_parse_augmentations():
    assert parse_augmentations("all") == AUGMENTATIONS
    assert parse_augmentations("none") == ()
    assert parse_augmentations("noise, zoom") == ("zoom", "noise")  # canonical order
    with pytest.raises(UsageError, match="twirl"):
        parse_augmentations("zoom,twirl")


def test_without_zoom_or_rotation_a_view_is_the_spec_crop_up_to_d4(caches):
    wide, centre = caches
    views = geometric_views(wide, 48, 0.5, 0.7, None, False, 0.0, torch.Generator().manual_seed(0))
    err = (d4_batch(centre).view(8, *centre.shape) - views[None]).abs().mean(dim=(2, 3, 4)).min(dim=0).values
    assert float(err.max()) < 0.01  # the same resampling as the reference reader's centre crop, within bilinear error


def test_views_are_deterministic_with_the_seed_and_vary_without_it(caches):
    wide, _ = caches

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return photometric(geometric_views(wide, 48, 0.5, 0.7, (0.35, 0.65), True, 0.1, g), AUGMENTATIONS, g)

    a, b, c = run(1), run(1), run(2)
    assert a.shape == (8, 3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_zoom_changes_the_scale(caches):
    wide, _ = caches
    g = torch.Generator().manual_seed(0)
    tight = geometric_views(wide, 48, 0.5, 0.7, (0.3, 0.3), False, 0.0, g)
    loose = geometric_views(wide, 48, 0.5, 0.7, (0.7, 0.7), False, 0.0, g)
    # A tighter crop magnifies the galaxy: more of the view is bright.
    assert float((tight > 0.15).float().mean()) > 1.5 * float((loose > 0.15).float().mean())


def test_each_photometric_switch_alone_changes_the_image_and_none_keeps_it(caches):
    _, centre = caches
    same = photometric(centre, (), torch.Generator().manual_seed(0))
    assert torch.equal(same, centre.clamp(0, 1))
    for name in ("flux", "noise", "blur", "curve"):
        out = photometric(centre, (name,), torch.Generator().manual_seed(0))
        assert float((out - centre).abs().mean()) > 1e-4, name


def test_curve_with_equal_softenings_is_the_identity(monkeypatch):
    """photometric's curve undoes an asinh composite and redoes it: with one softening, no colour gains
    and no sky offset it must give the image back (the test had rewritten the formula instead of calling it)."""
    from galaxy.training import augment

    monkeypatch.setattr(augment, "CURVE_PROBABILITY", 1.0)  # every image drawn for the curve
    monkeypatch.setattr(augment, "CURVE_SOFTENING", (0.05, 0.05))
    monkeypatch.setattr(augment, "BAND_GAIN", (1.0, 1.0))
    monkeypatch.setattr(augment, "SKY_OFFSET", 0.0)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = photometric(x, ("curve",), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)
    monkeypatch.setattr(augment, "CURVE_SOFTENING", (0.01, 1.0))  # two softenings: the curve changes the image
    assert not torch.allclose(photometric(x, ("curve",), torch.Generator().manual_seed(0)), x, atol=1e-3)


def test_augmentations_work_on_the_device_the_batch_lies_on():
    """On a GPU the batch lies there and the random draws stay on the CPU generator: every tensor
    they make must follow the batch. The meta device stands in for a GPU here (any CPU tensor
    mixed into its arithmetic fails); the noise needs a device generator, which meta lacks."""
    g = torch.Generator().manual_seed(0)
    wide = torch.rand(4, 3, 40, 40, dtype=torch.float16).to("meta")
    views = geometric_views(wide, 32, 0.5, 0.65, (0.35, 0.65), True, 0.1, g)
    out = photometric(views, tuple(n for n in AUGMENTATIONS if n != "noise"), g)
    assert views.device.type == out.device.type == "meta" and out.shape == (4, 3, 32, 32)


def _disks(scale_lengths, side: int = 96) -> torch.Tensor:
    """Exponential disks (a face-on spiral's profile) on a dark sky: (N, 3, side, side) in [0, 1]."""
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    r = torch.hypot(y - (side - 1) / 2, x - (side - 1) / 2)
    disks = torch.stack([0.9 * torch.exp(-r / h) for h in scale_lengths])
    return disks[:, None].expand(-1, 3, -1, -1).contiguous()


def test_apparent_size_shows_every_galaxy_at_the_same_range_of_sizes():
    from galaxy.io.framing import petrosian_fraction

    # Cached fields hold the central 0.7 of a cutout; three galaxies framed 1x, 1.5x and 2x as large.
    fields = _disks([3.0, 4.5, 6.0]).repeat(8, 1, 1, 1)
    framing = torch.tensor([petrosian_fraction(f.permute(1, 2, 0).numpy()) * 0.7 for f in fields])
    assert float(framing[2] / framing[0]) == pytest.approx(2.0, rel=0.1)

    def measured(views):
        return torch.tensor([petrosian_fraction(v.permute(1, 2, 0).numpy()) for v in views]).view(8, 3)

    g = torch.Generator().manual_seed(0)
    plain = measured(geometric_views(fields, 64, 0.5, 0.7, (0.35, 0.65), False, 0.0, g))
    by_size = measured(geometric_views(fields, 64, 0.5, 0.7, (0.35, 0.65), False, 0.0, g, framing, (0.3, 0.3)))
    # A random zoom keeps the larger galaxy larger on average; by its size, each fills 0.3 of the view.
    assert float(plain[:, 2].median() / plain[:, 0].median()) > 1.5
    assert by_size.flatten().tolist() == pytest.approx([0.3] * 24, abs=0.02)
    # No framing measured (nan): that image keeps the --zoom-range draw.
    unknown = framing.clone()
    unknown[0] = float("nan")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    mixed = geometric_views(fields[:3], 64, 0.5, 0.7, (0.35, 0.65), False, 0.0, g1, unknown[:3], (0.3, 0.3))
    zoomed = geometric_views(fields[:3], 64, 0.5, 0.7, (0.35, 0.65), False, 0.0, g2)
    # (the disks look alike under any of the D4 draws, which the extra draw moves on)
    assert torch.allclose(mixed[0], zoomed[0], atol=1e-3) and not torch.allclose(mixed[2], zoomed[2], atol=1e-3)


def test_scale_consistency_views_are_larger_and_the_loss_teaches_only_the_larger_view():
    from galaxy.training.augment import CONSISTENCY_ZOOM, larger_view_crops
    from galaxy.training.train_batch import scale_consistency_loss

    crop = torch.full((500,), 0.5)
    larger = larger_view_crops(crop, torch.Generator().manual_seed(0))
    zoom = crop / larger
    assert float(zoom.min()) >= CONSISTENCY_ZOOM[0] - 1e-6 and float(zoom.max()) <= CONSISTENCY_ZOOM[1] + 1e-6
    assert float(larger_view_crops(torch.tensor([0.26]), torch.Generator().manual_seed(0))) == pytest.approx(0.25)

    anchor = torch.tensor([[2.0, -1.0], [-0.5, 0.5]], requires_grad=True)
    same = anchor.detach().clone().requires_grad_(True)
    assert float(scale_consistency_loss(anchor, same).detach()) == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[-1.0, 1.0], [0.5, -0.5]], requires_grad=True)
    loss = scale_consistency_loss(anchor, other)
    loss.backward()
    assert float(loss.detach()) > 0.1 and anchor.grad is None and float(other.grad.abs().sum()) > 0
