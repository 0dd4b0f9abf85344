import io

import numpy as np
import pytest
from PIL import Image

from galaxy.errors import ImageReadError
from galaxy.io.images import crop_resize, load_input, normalise, read_raster
from galaxy.spec import InputSpec


def test_real_jpeg_reads_as_rgb_unit_range(real_jpeg):
    pixels = read_raster(real_jpeg)
    assert pixels.shape == (423, 423, 3) and pixels.dtype == np.float32
    assert 0 <= pixels.min() and pixels.max() <= 1
    assert pixels.max() > 0.5  # a galaxy is there, not a blank frame


def test_load_input_shape_and_normalisation(real_jpeg):
    spec = InputSpec(size=64, mean=(0.1, 0.1, 0.1), std=(0.2, 0.2, 0.2))
    tensor, meta = load_input(real_jpeg, spec)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == np.float32
    assert meta == {}
    # undoing the normalisation gives back the crop_resize output
    resized = crop_resize(read_raster(real_jpeg), spec.crop_fraction, spec.size)
    np.testing.assert_allclose(tensor * 0.2 + 0.1, resized.transpose(2, 0, 1), atol=1e-6)


def test_centre_crop_keeps_the_centre():
    pixels = np.zeros((100, 100, 3), np.float32)
    pixels[25:75, 25:75] = 1.0  # bright centre half
    out = crop_resize(pixels, 0.5, 20)
    assert out.shape == (20, 20, 3)
    assert out[1:-1, 1:-1].min() > 0.99  # the filter reaches one pixel past the box at the rim


def _save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA", "LA"])
def test_png_modes(tmp_path, real_jpeg, mode):
    src = Image.open(real_jpeg).convert("RGB")
    img = src.convert(mode) if mode != "P" else src.quantize(64)
    pixels = read_raster(_save(tmp_path, "x.png", img))
    assert pixels.shape == (423, 423, 3)
    reference = np.asarray(src, np.float32) / 255
    tolerance = 0.15 if mode in ("P", "L", "LA") else 0.01
    assert np.abs(pixels.mean() - reference.mean()) < tolerance


def test_alpha_is_composited_onto_black(tmp_path):
    rgba = np.full((16, 16, 4), 255, np.uint8)
    rgba[..., 3] = 0
    pixels = read_raster(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    assert pixels.max() == 0


def test_16bit_png_keeps_its_range(tmp_path):
    data = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    pixels = read_raster(_save(tmp_path, "d.png", Image.fromarray(data)))
    np.testing.assert_allclose(pixels[..., 0], data / 65535, atol=1e-6)


def test_cmyk_jpeg_is_converted(tmp_path, real_jpeg):
    path = _save(tmp_path, "c.jpg", Image.open(real_jpeg).convert("CMYK"))
    assert read_raster(path).shape == (423, 423, 3)


def test_one_bit_png_is_refused_with_its_mode(tmp_path):
    path = _save(tmp_path, "f.png", Image.fromarray(np.zeros((16, 16), bool)))
    with pytest.raises(ImageReadError, match="unsupported image mode '1'"):
        read_raster(path)


def test_other_formats_are_refused(tmp_path):
    path = _save(tmp_path, "g.jpg", Image.new("RGB", (8, 8)), format="GIF")
    with pytest.raises(ImageReadError, match="is GIF, not JPEG or PNG"):
        read_raster(path)


@pytest.mark.parametrize("content,reason", [
    (b"", "an empty file \\(0 bytes\\)"),
    (b"\x00\x01 not an image at all", "not a JPEG or PNG"),
    (b"P6 garbage\n", "not a JPEG or PNG image \\(unrecognised content\\)"),  # PIL's PPM parser: int() of b'garbage'
])
def test_bad_bytes_named_jpg(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_raster(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("keep", [300, 2000])  # cut in the headers (PIL: "Truncated File Read"), in the scan data
def test_truncated_jpeg(tmp_path, real_jpeg, keep):
    path = tmp_path / "cut.jpeg"
    path.write_bytes(real_jpeg.read_bytes()[:keep])
    with pytest.raises(ImageReadError) as info:
        read_raster(path)
    assert info.value.reason == {300: "truncated: the file ends before its image data (no start-of-scan marker)",
                                 2000: "truncated: the image data ends before the end-of-image marker"}[keep]


@pytest.mark.parametrize("keep", [8, 33, 40])  # the signature, + IHDR, + part of the next chunk's header
def test_a_png_cut_short_in_its_header_is_called_truncated_not_another_format(tmp_path, keep):
    """It had read "not a JPEG or PNG image (unrecognised content)" for a file that is a PNG."""
    whole = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(whole, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(whole.getvalue()[:keep])
    with pytest.raises(ImageReadError) as info:
        read_raster(path)
    assert info.value.reason == ("truncated or corrupt PNG: it begins as one but its header ends or breaks within "
                                 f"{keep} bytes")


def test_directory_named_like_an_image(tmp_path):
    folder = tmp_path / "dir.jpg"
    folder.mkdir()
    with pytest.raises(ImageReadError, match="is a folder, not an image file"):
        load_input(folder, InputSpec())


def test_normalise_layout():
    spec = InputSpec(mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    out = normalise(np.ones((4, 5, 3), np.float32), spec)
    assert out.shape == (3, 4, 5)
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 1.0, 0.0])


def test_a_non_square_cutout_is_cropped_square_from_its_longer_side():
    """crop_resize took the crop fraction of each side and squashed the box into the square: a 2:1 cutout
    reached the network with its galaxy squashed 2:1. The square of the fraction of the longer side keeps
    the pixel scale: a cutout cut short at a frame's edge gives the square cutout's pixels."""
    rng = np.random.default_rng(0)
    square = rng.random((423, 423, 3), dtype=np.float32)
    expected = crop_resize(square, 0.5, 64)
    for shorter in (square[100:323], square[:, 100:323]):  # a short side still holding the whole crop
        np.testing.assert_allclose(crop_resize(shorter, 0.5, 64), expected, atol=1e-6)
    short = crop_resize(square[141:282], 0.5, 64)  # 141 rows: the crop reaches beyond them, into zeros
    np.testing.assert_allclose(short[24:40], expected[24:40], atol=1e-6)
    assert not short[:4].any() and not short[-4:].any()
    # a square cutout is cropped as before: the fraction of each side
    old = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(square[:, :, c]), mode="F").resize(
        (64, 64), Image.Resampling.BILINEAR, box=(105.75, 105.75, 317.25, 317.25))) for c in range(3)], axis=-1)
    np.testing.assert_array_equal(expected, old)


def test_ellipticals_cut_short_stay_ellipticals(tmp_path):
    """The shipped model on 12 bundled ellipticals cut to 423 x 141 (the same galaxies, less sky): squashed
    3:1 into the square, 10 of 12 were called spiral; cropped square, each keeps its label."""
    import csv

    from galaxy import load_model
    from tests.conftest import EXAMPLES

    rows = [r for r in csv.DictReader(open(EXAMPLES / "labels.csv")) if r["label"] == "elliptical"][:12]
    for r in rows:
        pixels = (read_raster(EXAMPLES / r["file"]) * 255).round().astype(np.uint8)
        Image.fromarray(pixels[141:282]).save(tmp_path / f"{r['id']}.png")
    model = load_model("sdss-xception-compact", backend="onnxruntime")
    whole = model.classify([str(EXAMPLES / r["file"]) for r in rows])
    short = model.classify([str(tmp_path / f"{r['id']}.png") for r in rows])
    assert list(short["label"]) == list(whole["label"])
    assert np.abs(np.asarray(short["p_spiral"]) - np.asarray(whole["p_spiral"])).max() < 0.15


def test_a_strip_mostly_outside_the_square_crop_is_refused(tmp_path):
    """A short side is padded with zeros; eight SDSS galaxies cut to 24 x 424 were all called spiral (p ~ 1),
    the network seeing mostly padding. At least half the square must be image, as half of what the network
    reads must be measured in a masked FITS band."""
    from galaxy import load_model
    from galaxy.errors import UsageError
    from tests.conftest import EXAMPLES

    pixels = (read_raster(sorted(EXAMPLES.glob("*.jpeg"))[0]) * 255).round().astype(np.uint8)
    Image.fromarray(pixels[200:224]).save(tmp_path / "strip.png")
    Image.fromarray(pixels[141:282]).save(tmp_path / "third.png")
    spec = InputSpec()
    with pytest.raises(ImageReadError, match=r"423 x 24 pixels: only 11% of the square the network reads"):
        load_input(tmp_path / "strip.png", spec)
    assert load_input(tmp_path / "third.png", spec)[0].shape == (3, spec.size, spec.size)  # 67% inside
    model = load_model("sdss-xception-compact", backend="onnxruntime")
    with pytest.raises(UsageError, match=r"image 0: 423 x 24 pixels: only 11%"):
        model.classify_arrays(pixels[200:224])


def test_resample_weights_are_crop_resize_as_matrices():
    """The nvjpeg pipeline's crop and resize (two matrix products) must be the reference reader's: a float64 box
    had drifted from PIL's C-float one by up to 3.5e-5 at crop 0.7 (review, session 39)."""
    import numpy as np

    from galaxy.io.images import crop_resize, resample_weights

    rng = np.random.default_rng(0)
    for (h, w), crop, size in [((423, 423), 0.5, 64), ((423, 423), 0.7, 299), ((424, 424), 0.613, 96),
                               ((300, 300), 0.05, 8), ((423, 141), 0.5, 64), ((17, 17), 1.0, 32)]:
        image = rng.random((h, w, 3), dtype=np.float32)
        rows, columns = resample_weights(h, w, crop, size)
        out = np.stack([rows @ (image[:, :, c] @ columns.T) for c in range(3)], -1)
        assert np.abs(out - crop_resize(image, crop, size)).max() < 5e-7, (h, w, crop, size)
