"""The FITS colour composite: astropy's Lupton mapping, unit-free, sky-subtracted, bands in order."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import make_lupton_rgb

from galaxy.io.bands import band_name, choose_planes, display_order, parse_bands
from galaxy.io.composite import (box3_peak, invert_composite, lupton_composite, lupton_parameters, sky_statistics,
                              solve_softening)
from galaxy.errors import UsageError
from galaxy.io.fits import read_band_files, read_fits_cutout
from galaxy.spec import FitsStretch, InputSpec

STRETCH = FitsStretch()


def flux_cube(seed=0, size=96):
    """A red bulge and a blue disc on a noisy sky, three bands (R, G, B = i, r, g), in nanomaggies."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size / 2
    bulge, disc = np.exp(-np.hypot(x, y) / 2.5), np.exp(-np.hypot(x, 2.2 * y) / 9)
    colours = [(3.0, 0.8), (2.0, 1.0), (1.0, 1.1)]
    return np.stack([20 * b * bulge + 6 * d * disc + rng.normal(0.3, 0.05, (size, size))
                     for b, d in colours], axis=-1)


def test_same_as_astropy_make_lupton_rgb():
    cube = flux_cube()
    ours = lupton_composite(cube, STRETCH)
    scaled = cube / np.abs(cube).max()
    sky, sigma = sky_statistics(scaled, STRETCH)
    x = (scaled - sky) / sigma + STRETCH.black_sigma
    u = solve_softening(box3_peak(x.mean(axis=2), STRETCH.peak_region), STRETCH)
    reference = make_lupton_rgb(*(scaled[..., c] for c in range(3)), output_dtype=np.float64,
                                **lupton_parameters(sky, sigma, u, STRETCH))
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_sky_statistics_match_astropy_sigma_clipped_stats():
    from astropy.stats import sigma_clipped_stats

    cube = flux_cube()
    sky, sigma = sky_statistics(cube, STRETCH)
    mean, _, std = sigma_clipped_stats(cube, axis=(0, 1), sigma=3, maxiters=5, cenfunc="mean", stdfunc="std")
    np.testing.assert_allclose(sky, mean, rtol=1e-9)
    assert sigma == pytest.approx(std.mean(), rel=1e-9)


def test_blank_pixels_are_left_out_of_the_sky_noise():
    """A cutout at a survey's edge: a quarter of the columns blank (NaN). Filled with the band's
    median they used to pull the measured noise down to ~0.75x and brighten the picture."""
    from galaxy.io.fits import composite_rgb

    cube = flux_cube(size=128)
    edge = cube.copy()
    edge[:, :32] = np.nan
    finite = np.isfinite(edge)
    sky_measured, sigma_measured = sky_statistics(cube[:, 32:], STRETCH)  # the pixels that were measured
    filled = np.where(finite, edge, np.nanmedian(edge, axis=(0, 1)))
    _, sigma_blank_in = sky_statistics(filled, STRETCH)
    sky, sigma = sky_statistics(filled, STRETCH, valid=finite)
    assert sigma_blank_in < 0.85 * sigma_measured
    assert sigma == pytest.approx(sigma_measured, rel=1e-9) and sky == pytest.approx(sky_measured, rel=1e-9)
    centre = (slice(32, 96), slice(32, 96))
    np.testing.assert_allclose(composite_rgb(edge, STRETCH, "edge.fits")[centre],
                               lupton_composite(cube, STRETCH)[centre], atol=0.02)


@pytest.mark.parametrize("rounds", [0, 1, 5, 12])
def test_sky_statistics_stopping_early_changes_nothing(rounds):
    """Every round computed as written, without stopping: the clipped stats are the same."""
    cube = flux_cube(seed=3) + np.random.default_rng(1).standard_cauchy((96, 96, 3)) * 0.01  # heavy tails
    stretch = FitsStretch(sky_iterations=rounds)
    flat = cube.reshape(-1, 3)
    keep = np.ones(flat.shape, dtype=bool)
    for _ in range(rounds + 1):
        mean = (flat * keep).sum(axis=0) / keep.sum(axis=0)
        std = np.sqrt((((flat - mean) ** 2) * keep).sum(axis=0) / keep.sum(axis=0))
        keep &= np.abs(flat - mean) <= stretch.sky_clip_sigma * std
    sky, sigma = sky_statistics(cube, stretch)
    np.testing.assert_allclose(sky, mean, rtol=1e-10)
    assert sigma == pytest.approx(std.mean(), rel=1e-10)


@pytest.mark.parametrize("unit", [1e-12, 3.631e-6, 1.0, 5e4])
def test_flux_unit_and_sky_pedestal_do_not_change_the_picture(unit):
    cube = flux_cube()
    reference = lupton_composite(cube, STRETCH)
    np.testing.assert_allclose(lupton_composite((cube + 7.5) * unit, STRETCH), reference, atol=1e-4)


def test_sky_is_dark_and_colours_keep_their_order():
    rgb = lupton_composite(flux_cube(), STRETCH)
    sky = rgb[:10, :10].mean()
    assert 0.005 < sky < 0.05  # a little above black, as in the survey JPEGs
    assert box3_peak(rgb.mean(axis=2), 0.5) == pytest.approx(STRETCH.peak_level, abs=0.05)
    centre = rgb[46:50, 46:50].mean(axis=(0, 1))
    assert centre[0] > centre[1] > centre[2]  # the red bulge stays red


def test_invert_composite_round_trips():
    rgb = np.clip(np.random.default_rng(1).uniform(0, 0.9, (8, 8, 3)), 0, 1)
    for mode in ("lupton", "channel"):
        linear = invert_composite(rgb, 0.1, mode)
        intensity = linear.mean(axis=2, keepdims=True) if mode == "lupton" else linear
        again = np.arcsinh(intensity / 0.1) / np.arcsinh(10.0)
        if mode == "lupton":
            again = linear * again / intensity
        np.testing.assert_allclose(again, rgb, atol=1e-9)


def test_band_names_and_display_order():
    assert [band_name(v) for v in ("SDSS r", "HSC-G", "i'", "DECam z", "Ks", "dark")] == ["r", "g", "i", "z", "ks", None]
    # KPNO/NOAO names (band, system, filter serial): the serial's letter named the band, the last winning
    assert [band_name(v) for v in ("g SDSS k1017", "R Harris k1004", "zd DECam k1038", "H-alpha", "[OIII]",
                                   "i.MP9702", "u*", "r2", "OmegaCAM r_SDSS")] == \
        ["g", "r", None, None, None, "i", "u", "r", "r"]
    assert display_order(["g", "r", "i"]) == [2, 1, 0]  # i -> R, r -> G, g -> B
    assert display_order(["u", "g", "r", "i", "z"]) == [3, 2, 1]  # SDSS's own three
    assert display_order(["g", "r", "z"]) == [2, 1, 0]
    assert display_order([None, None, None]) == [2, 1, 0]  # unnamed: wavelength order
    with pytest.raises(ValueError, match="choose three"):
        display_order([None] * 5)
    assert choose_planes(("i", "r", "g"), ["g", "r", "i"]) == [2, 1, 0]
    assert choose_planes((0, 1, 2), ["g", "r", "i"]) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"its plane carries no band names .*--bands 0"):
        choose_planes(("r",), [None])  # a 2-D file without FILTER: its band cannot be checked by name
    assert parse_bands("i, r, g") == ("i", "r", "g") and parse_bands("2,1,0") == (2, 1, 0)
    for bad in ("i,1", "q,r,g", "0,1,2,3"):
        with pytest.raises(UsageError):
            parse_bands(bad)


def _write_cube(path, cube_rgb, names=("g", "r", "i")):
    """(H, W, 3) in R, G, B = i, r, g -> a FITS cube in wavelength order, rows bottom-up."""
    hdu = fits.PrimaryHDU(np.ascontiguousarray(cube_rgb[::-1, :, ::-1].transpose(2, 0, 1), dtype=np.float32))
    for k, name in enumerate(names):
        hdu.header[f"BAND{k}"] = name
    hdu.writeto(path)


def test_cube_multi_extension_and_band_files_agree(tmp_path):
    cube = flux_cube()
    expected = lupton_composite(cube, STRETCH)
    _write_cube(tmp_path / "cube.fits", cube)
    rgb, _ = read_fits_cutout(tmp_path / "cube.fits", InputSpec())
    np.testing.assert_allclose(rgb, expected, atol=1e-5)

    extensions = [fits.PrimaryHDU()]
    files = {}
    for name, plane in zip(("g", "r", "i"), (cube[..., 2], cube[..., 1], cube[..., 0])):
        hdu = fits.ImageHDU(plane[::-1].astype(np.float32), name=name.upper())
        hdu.header["FILTER"] = f"SDSS {name}"
        extensions.append(hdu)
        files[name] = str(tmp_path / f"band_{name}.fits")
        fits.PrimaryHDU(plane[::-1].astype(np.float32)).writeto(files[name])
    fits.HDUList(extensions).writeto(tmp_path / "mef.fits")
    np.testing.assert_allclose(read_fits_cutout(tmp_path / "mef.fits", InputSpec())[0], expected, atol=1e-5)
    np.testing.assert_allclose(read_band_files(files, InputSpec())[0], expected, atol=1e-5)

    swapped, _ = read_fits_cutout(tmp_path / "cube.fits", InputSpec(fits_bands=("g", "r", "i")))
    np.testing.assert_allclose(swapped, expected[..., ::-1], atol=1e-5)


def test_unnamed_cube_is_taken_in_wavelength_order(tmp_path):
    cube = flux_cube()
    hdu = fits.PrimaryHDU(np.ascontiguousarray(cube[::-1, :, ::-1].transpose(2, 0, 1), dtype=np.float32))
    hdu.writeto(tmp_path / "plain.fits")
    np.testing.assert_allclose(read_fits_cutout(tmp_path / "plain.fits", InputSpec())[0],
                               lupton_composite(cube, STRETCH), atol=1e-5)


def test_every_real_fits_smoke_file_is_a_galaxy_on_a_dark_sky(real_fits_smoke):
    for path in real_fits_smoke:
        rgb, _ = read_fits_cutout(path, InputSpec())
        h, w = rgb.shape[:2]
        border = np.concatenate([rgb[:5].ravel(), rgb[-5:].ravel(), rgb[:, :5].ravel(), rgb[:, -5:].ravel()])
        centre = rgb[h // 2 - 3:h // 2 + 3, w // 2 - 3:w // 2 + 3]
        assert np.median(border) < 0.05, path.name
        assert centre.mean() > 5 * np.median(border), path.name


def test_fits_views_look_like_the_fits_path(real_jpeg):
    from galaxy.io.images import read_raster
    from galaxy.io.roundtrip import fits_views

    rgb = read_raster(real_jpeg)
    views = fits_views(rgb, STRETCH, np.random.default_rng(0), views=2)
    assert len(views) == 3 and all(v.shape == rgb.shape and v.dtype == np.float32 for v in views)
    for view in views:
        assert np.median(view) < 0.05 and 0.4 < box3_peak(view.mean(axis=2), 0.5) < 0.9
    assert np.array_equal(views[2][..., 0], views[2][..., 1])  # the single-band view is grey
    assert not np.array_equal(views[0], views[1])  # other random draws


@pytest.mark.parametrize("shape,crop,size", [((96, 96), 0.5, 64), ((101, 187), 0.634, 64), ((423, 423), 0.5, 96),
                                             ((64, 80), 1.0, 96), ((33, 47), 0.3, 299)])
def test_the_crop_alone_is_computed_as_in_the_whole_composite(tmp_path, shape, crop, size):
    """The network reads only the crop (plus the resampling filter's reach): computing just those
    pixels, with the sky and the peak still measured on the whole image, gives the same tensor."""
    from galaxy.io.images import _network_input, load_input, read_cutout

    rng = np.random.default_rng(sum(shape))
    side = min(shape)
    grown = np.pad(flux_cube(size=side), ((0, shape[0] - side), (0, shape[1] - side), (0, 0)), mode="reflect")
    cube = grown.transpose(2, 0, 1) + rng.normal(0, 0.01, (3, *shape))  # (bands, H, W) as FITS stores it
    cube[:, 3, 4] = np.nan  # a blank pixel: the sky statistics leave it out
    path = tmp_path / "g.fits"
    fits.PrimaryHDU(cube.astype(np.float32)).writeto(path)
    spec = InputSpec().replace(crop_fraction=crop, size=size)
    whole = _network_input(read_cutout(path, spec)[0], spec, path)
    np.testing.assert_array_equal(load_input(path, spec)[0], whole)


def test_the_peak_is_the_whole_images_when_only_a_small_crop_is_computed():
    """The curve's peak is read in the central half, whose 3x3 means reach one pixel beyond it: a
    star just outside sets the peak on the region's edge, as in the whole composite."""
    cube = flux_cube(size=96)
    top, bottom = 24, 72  # the central half of 96 pixels
    cube[top - 1, 48, :] += 500.0  # a star one pixel above the region
    whole = lupton_composite(cube, STRETCH)
    small = lupton_composite(cube, STRETCH, window=(40, 56, 40, 56))
    np.testing.assert_array_equal(small[40:56, 40:56], whole[40:56, 40:56])
    assert not small[:20].any()  # outside the crop and the peak's region: not computed


def quantised_galaxy(size=101, peak=50):
    """A noiseless galaxy rounded to integers: the sky is 0 everywhere, so its clipped spread is 0."""
    y, x = np.mgrid[:size, :size] - size // 2
    return np.round(peak * np.exp(-(x ** 2 + y ** 2) / 72.0)).astype(np.int16)


def test_quantised_data_take_the_quantisation_noise_not_a_constant_image_refusal():
    """Integer data of low range had been refused as "image is constant": the clipped sky is one value."""
    from galaxy.io.composite import quantisation_noise

    cube = quantised_galaxy()[:, :, None].astype(np.float64)
    assert sky_statistics(cube, STRETCH)[1] == 0.0
    assert quantisation_noise(cube, scale=50.0) == pytest.approx(1 / 50 / np.sqrt(12), rel=1e-12)
    evens = cube * 2  # a band whose values step by 2: its step, not the type's
    assert quantisation_noise(evens, scale=100.0) == pytest.approx(2 / 100 / np.sqrt(12), rel=1e-12)
    rgb = lupton_composite(cube, STRETCH)
    # the sky sits black_sigma noise units above black, one noise unit showing as noise_level (less the
    # asinh curve's bend, ~0.1%)
    assert rgb[0, 0, 0] == pytest.approx(STRETCH.black_sigma * STRETCH.noise_level, rel=5e-3)
    assert 0.5 < rgb.max() <= 1.0 and np.isfinite(rgb).all()


def test_only_an_image_of_one_value_per_band_is_called_constant():
    with pytest.raises(ValueError, match="image is constant: every band holds one value"):
        lupton_composite(np.full((32, 32, 3), 7.0), STRETCH)
    with pytest.raises(ValueError, match=r"image is constant \(every pixel is 0\)"):
        lupton_composite(np.zeros((32, 32, 1)), STRETCH)
    two = np.full((32, 32, 2), 7.0)
    two[10:20, 10:20, 1] = 8.0  # one band constant, the other a step of 1 on a flat sky: not constant
    assert np.isfinite(lupton_composite(two, STRETCH)).all()


def quantised_sky_galaxy(seed=0, size=103):
    """uint8 counts 99-110: a galaxy on a sky of 100 whose noise (0.3) rounds mostly to 100, so the clipped
    sky is the one value 100 (100 / 110 is no float64 number: the mean of the kept pixels has rounding)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size // 2
    return (100 + np.round(rng.normal(0, 0.3, (size, size)) + 10 * np.exp(-(x ** 2 + y ** 2) / 50.0))).astype(np.uint8)


def test_a_clipped_sky_of_one_value_has_no_rounding_noise():
    """The float64 rounding of such a sky's mean (~1e-16) had been its noise: a stretch of 1e15."""
    cube = quantised_sky_galaxy()[:, :, None].astype(np.float64)
    assert sky_statistics(cube, STRETCH, scale=float(cube.max()))[1] == 0.0
    rgb = lupton_composite(cube, STRETCH)
    assert np.median(rgb) == pytest.approx(STRETCH.black_sigma * STRETCH.noise_level, rel=5e-3)
