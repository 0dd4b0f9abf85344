"""Property tests: any FITS or raster file gives a correct array or an ImageReadError, nothing else."""

import io

import numpy as np
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from galaxy.errors import ImageReadError
from galaxy.io.fits import read_fits_cutout
from galaxy.io.images import load_input, read_raster
from galaxy.spec import InputSpec

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([np.uint8, np.int16, np.int32, np.float32, np.float64])
SHAPES = st.lists(st.integers(1, 12), min_size=1, max_size=4).map(tuple)


def _check_fits(path, expect_ok_shape=None):
    try:
        pixels, _ = read_fits_cutout(path, InputSpec())
    except ImageReadError as exc:
        assert exc.reason and exc.path == str(path)
        return None
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.float32
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1
    return pixels


@SETTINGS
@given(shape=SHAPES, dtype=DTYPES, seed=st.integers(0, 2**31), bzero=st.sampled_from([None, 0, 32768, -5.5]),
       nan_fraction=st.floats(0, 1))
def test_fits_data_of_any_shape_and_type(tmp_path, shape, dtype, seed, bzero, nan_fraction):
    rng = np.random.default_rng(seed)
    data = (rng.normal(100, 20, shape)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        data[rng.random(shape) < nan_fraction] = np.nan
    hdu = fits.PrimaryHDU(data)
    if bzero is not None and np.issubdtype(dtype, np.integer):
        hdu.header["BZERO"] = bzero
    path = tmp_path / f"p{seed}.fits"
    hdu.writeto(path, overwrite=True)
    pixels = _check_fits(path)
    squeezed = np.squeeze(data)
    if pixels is not None:
        assert squeezed.ndim in (2, 3)
        assert pixels.shape[:2] == squeezed.shape[-2:]


@SETTINGS
@given(header=st.dictionaries(st.sampled_from(["NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BITPIX", "BSCALE"]),
                              st.integers(-100, 100000), min_size=1), tail=st.binary(max_size=6000))
def test_fits_with_arbitrary_header_values(tmp_path, header, tail):
    cards = {"SIMPLE": True, "BITPIX": 8, "NAXIS": 0}
    cards.update(header)
    try:
        raw = fits.Header(cards).tostring().encode()
    except (ValueError, TypeError):
        return
    path = tmp_path / "h.fits"
    path.write_bytes(raw + tail)
    _check_fits(path)


@SETTINGS
@given(data=st.binary(max_size=3000))
def test_random_bytes_as_any_image(tmp_path, data):
    for name in ("x.jpg", "x.png", "x.fits", "x.fits.gz"):
        path = tmp_path / name
        path.write_bytes(data)
        try:
            load_input(path, InputSpec(size=16))
        except ImageReadError as exc:
            assert exc.reason


@SETTINGS
@given(mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "CMYK"]),
       width=st.integers(1, 40), height=st.integers(1, 40), fmt=st.sampled_from(["PNG", "JPEG"]),
       seed=st.integers(0, 1000))
def test_raster_modes_and_sizes(mode, width, height, fmt, seed):
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8), "RGB")
    img = img.convert(mode) if mode not in ("I;16", "I") else img.convert("L").convert(mode)
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format
    buffer.seek(0)
    try:
        pixels = read_raster(buffer)
    except ImageReadError as exc:
        assert exc.reason
        return
    assert pixels.shape == (height, width, 3) and pixels.dtype == np.float32
    assert pixels.min() >= 0 and pixels.max() <= 1
