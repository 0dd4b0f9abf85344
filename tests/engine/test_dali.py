"""DALI decode parity with the reference reader on real JPEGs (skipped where DALI is absent)."""

import numpy as np
import pytest

from engine.listing import Item
from engine.pipelines import dali_installed
from galaxy.io.images import load_input
from galaxy.spec import InputSpec
from tests.conftest import EXAMPLES

pytestmark = [pytest.mark.dali,
              pytest.mark.skipif(not dali_installed(), reason="nvidia-dali is not installed (pip install nvidia-dali-cuda130)")]

SPEC = InputSpec(size=96, mean=(0.07, 0.06, 0.04), std=(0.12, 0.1, 0.07))
# In [0, 1] pixel units; measured ~4e-7 (float rounding of the same antialiased linear filter).
TOLERANCE = 1e-4


def test_dali_matches_reference_on_real_jpegs(default_model):
    from engine import backends
    from engine.pipelines.dali import create

    model_dir, card = default_model
    spec = card.input_spec
    files = sorted(EXAMPLES.glob("*.jpeg"))
    out = list(create(spec, workers=2, depth=2, batch_size=16).decode(Item(str(p)) for p in files))
    assert [d.path for d in out] == [str(p) for p in files]
    std = np.asarray(spec.std)[:, None, None]
    references = []
    for decoded, path in zip(out, files):
        references.append(load_input(path, spec)[0])
        assert decoded.error is None
        assert np.abs((decoded.tensor - references[-1]) * std).max() < TOLERANCE
    session = backends.load("onnxruntime", model_dir, card, backends.BackendOptions())
    dali_labels = session.run(np.stack([d.tensor for d in out])).argmax(1)
    assert (dali_labels == session.run(np.stack(references)).argmax(1)).all()  # labels identical


def test_dali_crop_window_decode_matches_reference_at_any_shape(tmp_path):
    """Only the crop's window is decoded: odd, tiny, grey and 4:4:4 JPEGs still give the reference reader's
    tensor (the window's margin holds every pixel the resize reads); non-square ones go to the reference
    reader, which crops their square from the longer side (DALI's crop was of each side, squashed)."""
    from PIL import Image

    from engine.pipelines.dali import create

    source = Image.open(sorted(EXAMPLES.glob("*.jpeg"))[0])
    cases = {"wide.jpeg": source.resize((301, 157)), "tall.jpeg": source.resize((97, 260)),
             "tiny.jpeg": source.resize((17, 16)), "grey.jpeg": source.convert("L").resize((255, 255))}
    for name, image in cases.items():
        image.save(tmp_path / name, quality=90)
    source.save(tmp_path / "444.jpeg", quality=95, subsampling=0)
    paths = sorted(tmp_path.glob("*.jpeg"))
    out = list(create(SPEC, workers=2, depth=2, batch_size=8).decode(Item(str(p)) for p in paths))
    std = np.asarray(SPEC.std)[:, None, None]
    for path, decoded in zip(paths, out):
        assert decoded.error is None, path.name
        worst = float(np.abs((decoded.tensor - load_input(path, SPEC)[0]) * std).max())
        assert worst < TOLERANCE, f"{path.name}: {worst:.2e}"
    from engine.pipelines.base import read_jpeg

    assert [read_jpeg(p) is None for p in paths] == [p.name in ("tall.jpeg", "tiny.jpeg", "wide.jpeg") for p in paths]


def test_dali_hands_bad_and_non_jpeg_files_to_the_reference_reader(tmp_path):
    from PIL import Image

    from engine.pipelines.dali import create

    good = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    truncated = tmp_path / "cut.jpeg"
    truncated.write_bytes(good[0].read_bytes()[:3000])
    png = tmp_path / "x.png"
    Image.open(good[1]).save(png)
    cmyk = tmp_path / "cmyk.jpg"
    Image.open(good[2]).convert("CMYK").save(cmyk)
    items = [Item(str(good[0])), Item(str(truncated)), Item(str(png)), Item(str(cmyk)), Item(str(good[2]))]
    out = list(create(SPEC, workers=2, depth=2, batch_size=4).decode(items))
    assert [d.path for d in out] == [i.path for i in items]
    assert out[1].error is not None and "truncated" in out[1].error.reason
    for k in (0, 2, 3, 4):
        assert out[k].error is None
        np.testing.assert_allclose(out[k].tensor, load_input(items[k].path, SPEC)[0], atol=1e-3)


def test_jpeg_component_sniffing(tmp_path):
    from PIL import Image

    from galaxy.io.jpeg import jpeg_frame

    for mode, n in (("RGB", 3), ("L", 1), ("CMYK", 4)):
        path = tmp_path / f"{mode}.jpg"
        Image.new(mode, (8, 8)).save(path)
        assert jpeg_frame(path.read_bytes()) == (n, 8, 8)
    assert jpeg_frame(b"\x89PNG....") is None


def _fits_files(tmp_path):
    import gzip

    from astropy.io import fits

    from tests.galaxy.test_fits import galaxy_image

    paths = []
    fits.PrimaryHDU(galaxy_image(100)).writeto(tmp_path / "a.fits")
    (tmp_path / "a.fits.gz").write_bytes(gzip.compress((tmp_path / "a.fits").read_bytes()))
    nan = galaxy_image(64, seed=3)
    nan[:4] = np.nan
    fits.PrimaryHDU(nan).writeto(tmp_path / "nan.fits")
    fits.PrimaryHDU(np.stack([galaxy_image(80, s) for s in range(3)])).writeto(tmp_path / "cube.fits")
    science = fits.ImageHDU(galaxy_image(64), name="SCI")
    science.header["OBJID"] = "77"
    fits.HDUList([fits.PrimaryHDU(), science]).writeto(tmp_path / "ext.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(galaxy_image(64), compression_type="RICE_1")]).writeto(
        tmp_path / "rice.fits.fz")
    for name in ("a.fits", "a.fits.gz", "nan.fits", "cube.fits", "ext.fits", "rice.fits.fz"):
        paths.append(tmp_path / name)
    return paths


def test_dali_fits_reader_matches_reference(tmp_path):
    from engine.pipelines.dali_fits import decode_fits

    paths = _fits_files(tmp_path)
    out = decode_fits([Item(str(p)) for p in paths], SPEC, threads=2)
    for path, decoded in zip(paths, out):
        if path.name == "nan.fits":  # non-finite pixels: the reference reader fills them with sky
            assert decoded is None
            continue
        assert decoded is not None, f"{path.name} was not decoded by DALI"
        assert decoded.error is None
        reference = load_input(path, SPEC)[0]
        assert np.abs((decoded.tensor - reference) * np.asarray(SPEC.std)[:, None, None]).max() < TOLERANCE
    assert out[4].id == "77"


def test_dali_fits_refuses_a_corrupt_gzip(tmp_path):
    """DALI's FITS reader (cfitsio) checks gzip's CRC, where astropy alone did not."""
    import gzip

    from engine.pipelines.dali_fits import build_fits_graph

    plain = _fits_files(tmp_path)[0]
    flipped = bytearray(gzip.compress(plain.read_bytes()))
    flipped[len(flipped) // 2] ^= 0x10
    corrupt = tmp_path / "corrupt.fits.gz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(RuntimeError):
        build_fits_graph([str(corrupt)], (0,), [0], 2, SPEC, 1, None).run()


def test_dali_fits_bad_file_falls_back_to_reference_reasons(tmp_path):
    from astropy.io import fits

    from engine.pipelines.dali import create

    paths = _fits_files(tmp_path)[:2]
    fits.PrimaryHDU(np.full((16, 16), np.nan, np.float32)).writeto(tmp_path / "allnan.fits")
    (tmp_path / "table.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    paths += [tmp_path / "allnan.fits", tmp_path / "table.fits"]
    out = list(create(SPEC, workers=2, depth=2, batch_size=8).decode(Item(str(p)) for p in paths))
    assert out[0].error is None and out[1].error is None
    assert "no finite pixel" in out[2].error.reason
    assert out[3].error is not None


def test_dali_composite_matches_the_reference_on_real_fits(tmp_path, real_fits_smoke):
    """The colour composite in DALI operators == galaxy.io.composite (numpy, held equal to astropy's
    make_lupton_rgb in tests/galaxy/test_composite.py): real SDSS/KiDS files with odd units and
    dtypes, and g, r, i round-trip cubes of real JPEGs (band order from BANDn keys)."""
    from engine.pipelines.dali_fits import decode_fits
    from galaxy.io.images import read_raster
    from galaxy.io.roundtrip import RoundTripDraw, write_cube

    cubes = []
    for k, jpeg in enumerate(sorted(EXAMPLES.glob("*.jpeg"))[:6]):
        cubes.append(tmp_path / f"cube{k}.fits")
        write_cube(cubes[-1], read_raster(jpeg), RoundTripDraw(0.05 * (k + 1), ("lupton", "channel")[k % 2],
                                                               10.0 ** (-k - 3), 0.01))
    paths = list(real_fits_smoke) + cubes
    from galaxy.io.fits_hdus import locate_image

    out = decode_fits([Item(str(p)) for p in paths], SPEC, threads=2)
    std = np.asarray(SPEC.std)[:, None, None]
    square = [locate_image(p).square for p in paths]
    assert 0 < sum(square) < len(paths)  # the real files come in both shapes
    for path, decoded, is_square in zip(paths, out, square):
        if not is_square:  # the reference reader crops a non-square cutout's square (galaxy.io.images.crop_resize)
            assert decoded is None, path.name
            continue
        assert decoded is not None and decoded.error is None, path.name
        assert np.abs((decoded.tensor - load_input(path, SPEC)[0]) * std).max() < TOLERANCE, path.name


@pytest.mark.gpu
def test_dali_gpu_decodes_fits_and_jpeg_like_the_reference_reader(tmp_path):
    """The dali-gpu pipeline: FITS composites in DALI operators on the GPU and nvJPEG-decoded JPEGs,
    mixed in one stream, against the reference reader (NaN-pixel FITS handed to it)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to PyTorch on this machine")
    from engine.pipelines.dali_gpu import create

    paths = _fits_files(tmp_path) + sorted(EXAMPLES.glob("*.jpeg"))[:10]
    out = list(create(SPEC, 2, 2, batch_size=8).decode(Item(str(p)) for p in paths))
    std = np.asarray(SPEC.std)[:, None, None]
    assert [d.path for d in out] == [str(p) for p in paths]
    for path, decoded in zip(paths, out):
        assert decoded.error is None, path.name
        tensor = decoded.tensor.cpu().numpy() if isinstance(decoded.tensor, torch.Tensor) else decoded.tensor
        worst = float(np.abs((tensor - load_input(path, SPEC)[0]) * std).max())
        limit = 1e-3 if ".fits" in path.name else 2e-2  # nvJPEG's IDCT differs from libjpeg-turbo's
        assert worst < limit, f"{path.name}: max difference {worst:.2e} (pixel units)"


def test_the_runner_decodes_in_chunks_of_at_least_64_on_the_cpu(default_model):
    """DALI's graph runs on chunks of CPU_DECODE_CHUNK images whatever the engine's batch (its per-run
    costs spread wider), and the engine still gets batches of its own size, in input order."""
    from engine.listing import Item
    from engine.runner import CPU_DECODE_CHUNK, Runner

    model_dir, card = default_model
    runner = Runner(model_dir, card, "onnxruntime", "dali", batch_size=8)
    assert runner.pipeline.name == "dali" and runner.pipeline.batch_size == CPU_DECODE_CHUNK == 64
    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))]
    results = list(runner.run((Item(p) for p in files), lambda failure: None))
    assert [len(r.ids) for r in results] == [8] * (len(files) // 8) + ([len(files) % 8] if len(files) % 8 else [])
    assert [p for r in results for p in r.paths] == files


def test_an_interrupt_stops_the_decode_thread_at_once(default_model):
    """Ctrl-C while the engine ran a batch: the exception, kept to say the run was interrupted, kept the
    decode generator alive and unclosed; the garbage collector later closed it in its own thread
    ("cannot join current thread"), DALI's exit handler met a pipeline still decoding, and the
    process aborted (exit -6 instead of 130)."""
    import threading

    from engine.runner import Runner

    model_dir, card = default_model
    runner = Runner(model_dir, card, "onnxruntime", "dali", batch_size=8)
    calls = []

    def interrupted(tensor):
        calls.append(len(tensor))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return runner.session.run(tensor)

    runner.infer = interrupted
    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))] * 4
    kept = None
    try:
        for _ in runner.run((Item(p) for p in files), lambda failure: None):
            pass
    except KeyboardInterrupt as exc:
        kept = exc  # as run.classify keeps it for its summary
    assert kept is not None and kept.__traceback__ is not None
    assert not [t for t in threading.enumerate() if t.name == "galaxy-prefetch" and t.is_alive()]


@pytest.mark.parametrize("crop", [0.96, 1.0])
def test_a_crop_that_reaches_the_edges_gives_the_reference_readers_pixels(crop):
    """At crop 1.0 DALI's resize treated the image's edges otherwise than PIL: border rows 0.12 apart and
    p_spiral 0.018 apart with int8, so the catalog depended on the decoder picked."""
    from engine.pipelines.dali import create

    spec = SPEC.replace(crop_fraction=crop)
    files = sorted(EXAMPLES.glob("*.jpeg"))[:8]
    out = list(create(spec, workers=2, depth=2, batch_size=8).decode(Item(str(p)) for p in files))
    std = np.asarray(spec.std)[:, None, None]
    worst = max(float(np.abs((d.tensor - load_input(p, spec)[0]) * std).max()) for d, p in zip(out, files))
    assert worst < TOLERANCE, worst


def test_dali_hands_a_quantised_sky_to_the_reference_readers_quantisation_noise(tmp_path):
    """A clipped sky of one value (quantised data stored as floats) had divided by a noise of 0 in DALI, an
    all-black composite that reached the reference reader only as a blank one, which then refused it as
    "image is constant". The graph's check now flags it by itself."""
    from astropy.io import fits

    from engine.pipelines.dali_fits import build_fits_graph, decode_fits
    from tests.galaxy.test_composite import quantised_galaxy

    path = tmp_path / "quantised.fits"
    fits.PrimaryHDU(quantised_galaxy().astype(np.float32)).writeto(path)
    _, checks = build_fits_graph([str(path)], (0,), [0], 2, SPEC, 1, None).run()
    assert not np.isfinite(np.asarray(checks[0])).all()
    assert decode_fits([Item(str(path))], SPEC, threads=2) == [None]
    reference = load_input(path, SPEC)[0]
    assert np.isfinite(reference).all() and reference.std() > 0


def test_dali_hands_a_sky_of_one_value_to_the_reference_reader(tmp_path):
    """uint8 counts 99-110: DALI took the float32 rounding of the one-valued clipped sky (~6e-8) as its
    noise, the reference reader float64's (~1e-16), 0.06 apart in the tensor; now the reference reader's
    quantisation noise decides, and DALI flags the file for it."""
    from astropy.io import fits

    from engine.pipelines.dali_fits import decode_fits
    from tests.galaxy.test_composite import quantised_sky_galaxy

    path = tmp_path / "u8.fits"
    fits.PrimaryHDU(quantised_sky_galaxy()).writeto(path)
    assert decode_fits([Item(str(path))], SPEC, threads=2) == [None]
    assert np.isfinite(load_input(path, SPEC)[0]).all()
