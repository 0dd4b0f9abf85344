"""Masked (NaN/inf) pixels of FITS cutouts: filled from their neighbours, refused at the centre when too large."""

import numpy as np
import pytest
from astropy.io import fits

from galaxy.errors import ImageReadError
from galaxy.io.fits import read_fits_cutout
from galaxy.io.masked import MASKED_WARNING, MaskedRows, fill_masked, masked_centre, masked_share
from galaxy.spec import InputSpec

SPEC = InputSpec(size=96, crop_fraction=0.5)  # a 192 px cutout: one file pixel a network pixel


def disc_galaxy(size=192, seed=0):
    """An exponential disc (scale 12 px) with a brighter bulge on a noisy sky, float32 (size, size)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size / 2
    r = np.hypot(x, y / 0.7)
    return (800 * np.exp(-r / 12) + 1500 * np.exp(-np.hypot(x, y) / 2.5) + rng.normal(100, 3, (size, size))
            ).astype(np.float32)


def written(tmp_path, name, data):
    path = tmp_path / f"{name}.fits"
    fits.PrimaryHDU(data).writeto(path)
    return path


def test_a_masked_column_through_the_centre_is_filled_from_its_neighbours(tmp_path):
    """Filled with the band's sky, a 3 px NaN column through the centre cut the galaxy in two (KiDS
    ellipticals went from p_spiral 0.01-0.04 to 0.56-0.70); filled from its neighbours the picture is
    close to the one without the mask."""
    data = disc_galaxy()
    masked = data.copy()
    masked[:, 95:98] = np.nan
    whole, _ = read_fits_cutout(written(tmp_path, "whole", data), SPEC)
    filled, _ = read_fits_cutout(written(tmp_path, "column", masked), SPEC)
    sky = masked.copy()
    sky[:, 95:98] = np.nanmedian(masked)
    with_sky, _ = read_fits_cutout(written(tmp_path, "sky", sky), SPEC)
    column = (slice(48, 144), slice(95, 98))  # the crop's rows; FITS columns keep their order
    filled_error = np.abs(filled[column] - whole[column]).mean()
    assert filled_error < 0.03 and np.abs(with_sky[column] - whole[column]).mean() > 5 * filled_error
    assert np.isfinite(filled).all()


def test_holes_away_from_the_centre_and_single_pixels_are_filled_not_refused(tmp_path):
    data = disc_galaxy()
    data[20:50, 20:50] = np.nan  # a masked star far from the galaxy's centre
    data[96, 96] = np.inf  # a cosmic ray at the centre
    data[:, :6] = np.nan  # the survey's edge
    pixels, _ = read_fits_cutout(written(tmp_path, "holes", data), SPEC)
    assert np.isfinite(pixels).all()


@pytest.mark.parametrize("side, refused", [(1, False), (3, False), (5, True), (9, True)])
def test_a_hole_at_the_centre_deeper_than_two_network_pixels_is_refused(tmp_path, side, refused):
    """A masked 9 x 9 core turned KiDS ellipticals into p_spiral 0.90-0.99: the core is not measured.
    Here a file pixel is a network pixel; a side-s hole's middle lies (s + 1) // 2 from a measured pixel."""
    data = disc_galaxy()
    start = 96 - side // 2
    data[start:start + side, start:start + side] = np.nan
    path = written(tmp_path, f"core{side}", data)
    if refused:
        with pytest.raises(ImageReadError, match=r"masked \(NaN or inf\) pixels at the galaxy's centre .* more than "
                                                 r"2 pixels of the network's input \(2 of this file's\)"):
            read_fits_cutout(path, SPEC)
    else:
        assert np.isfinite(read_fits_cutout(path, SPEC)[0]).all()


def test_a_masked_column_moves_real_galaxies_little(tmp_path, real_fits_smoke, default_model):
    """The shipped model on the real KiDS cutouts with a 3 px NaN column through the centre: filled
    with sky their p_spiral moved by up to 0.55; filled from the neighbours by at most ~0.1."""
    from engine.runner import Runner
    from galaxy.io.images import load_input

    model_dir, card = default_model
    runner = Runner(model_dir, card, backend="onnxruntime", decoder="reference")
    whole, masked = [], []
    for path in [p for p in real_fits_smoke if p.name.startswith("KiDS")]:
        data = fits.getdata(path).astype(np.float32)
        middle = data.shape[1] // 2
        data[:, middle - 1:middle + 2] = np.nan
        try:
            masked.append(load_input(written(tmp_path, path.stem, data), card.input_spec)[0])
        except ImageReadError as exc:  # a cutout small enough that 3 px are > 2 network pixels deep
            assert "at the galaxy's centre" in exc.reason
            continue
        whole.append(load_input(path, card.input_spec)[0])
    assert len(whole) >= 5
    change = np.abs(runner.infer_all(np.stack(masked))[:, 1] - runner.infer_all(np.stack(whole))[:, 1])
    assert change.max() < 0.15, change


def test_the_depth_allowed_scales_with_the_file_pixels_a_network_pixel_holds():
    measured = np.ones((423, 423), dtype=bool)
    measured[207:216, 207:216] = False  # 9 x 9: 5 file pixels deep
    assert masked_centre(measured, 0.5, 64) is None  # 212 px crop at 64: 3.3 file pixels a network pixel
    assert masked_centre(measured, 0.5, 212) is not None  # one file pixel a network pixel
    assert "the central 0.0625 of each side" in masked_centre(measured, 0.5, 212)


def test_a_hole_beyond_the_fills_reach_is_refused_however_large_the_cutout():
    """The depth allowed grew with the cutout (2 network pixels: 31 file pixels of a 1000 px cutout) and
    the fill's reach did not: a 29 x 29 hole at the centre was accepted with its middle filled with sky."""
    from galaxy.io.masked import FILL_REACH, fill_plane

    measured = np.ones((1000, 1000), dtype=bool)
    measured[486:515, 486:515] = False  # 29 x 29: 15 deep
    assert masked_centre(measured, 0.5, 64) is not None
    measured = np.ones((1000, 1000), dtype=bool)
    side = 2 * FILL_REACH - 1
    start = 500 - side // 2
    measured[start:start + side, start:start + side] = False  # FILL_REACH deep: accepted, and wholly filled
    assert masked_centre(measured, 0.5, 64) is None
    assert fill_plane(np.where(measured, 1.0, 0.0), measured)[1].all()


def test_fill_masked_reaches_into_a_hole_and_leaves_sky_beyond():
    cube = np.full((64, 64, 2), 10.0)
    cube[..., 1] = np.linspace(0, 63, 64)[None, :]  # a gradient in the second band
    measured = np.ones_like(cube, dtype=bool)
    measured[:, 40:, 0] = False  # 24 columns blank: beyond the fill's reach in the middle
    measured[30:33, 30:33, 1] = False
    out = fill_masked(np.where(measured, cube, np.nan), measured)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[..., 0], 10.0)  # reached or sky, the band is flat
    np.testing.assert_allclose(out[30:33, 30:33, 1], cube[30:33, 30:33, 1], rtol=0.02)


def test_masked_share_counts_the_crops_pixels_masked_in_any_band():
    measured = np.ones((192, 192, 3), bool)  # crop 0.5: rows and columns 48-143
    assert masked_share(measured, 0.5) == 0.0
    measured[:, :48] = False  # all outside the crop: nothing the network reads
    assert masked_share(measured, 0.5) == 0.0
    measured[:, 48:72, 1] = False  # a quarter of the crop's columns, in one band only
    assert masked_share(measured, 0.5) == pytest.approx(0.25)
    measured[100, 100:110, 2] = False  # 10 more pixels, in another band
    assert masked_share(measured, 0.5) == pytest.approx(0.25 + 10 / 96 ** 2)


def test_the_reader_gives_the_masked_share_of_the_crop(tmp_path):
    data = disc_galaxy()
    assert read_fits_cutout(written(tmp_path, "whole", data), SPEC)[1]["masked_fraction"] == 0.0
    data[:, :72] = np.nan  # the survey's edge, a quarter of the crop's columns inside it
    assert read_fits_cutout(written(tmp_path, "edge", data), SPEC)[1]["masked_fraction"] == pytest.approx(0.25)


def test_masked_rows_name_the_rows_beyond_the_warning_share_and_merge_in_order():
    first, second = MaskedRows(), MaskedRows()
    for k, share in enumerate((0.0, 0.05, MASKED_WARNING, 0.2, 0.31)):
        first.add(f"a{k}", {"masked_fraction": repr(share)})
    first.add("jpeg", {})  # no share: not a FITS input
    first.add("blank", {"masked_fraction": ""})
    assert (first.count, first.largest, first.ids) == (2, 0.31, ["a3", "a4"])
    for k in range(3):
        second.add(f"b{k}", {"masked_fraction": "0.5"})
    first.merge(second)
    assert (first.count, first.largest, first.ids) == (5, 0.5, ["a3", "a4", "b0"])
    (line,) = first.warnings()
    assert line.startswith("5 rows: more than 10% of the pixels") and "largest 50%: ids a3, a4, b0, ...)" in line
    assert MaskedRows().warnings() == []


@pytest.mark.parametrize("ray", [False, True])
def test_a_run_records_each_fits_inputs_masked_share_and_warns_beyond_a_tenth(tmp_path, caplog, ray, default_model):
    """A filled region away from the centre is not refused, yet a third of the crop moved a label in 16%
    of 300 validation galaxies (`benchmarks/masked_share.py`): the catalog says how much of each crop was
    filled, and the run names the rows beyond MASKED_WARNING. JPEG rows have no share (empty)."""
    import logging
    import shutil

    from astropy.table import Table
    from click.testing import CliRunner

    from galaxy.cli import cli
    from tests.conftest import EXAMPLES

    folder = tmp_path / "in"
    folder.mkdir()
    data = disc_galaxy()
    written(folder, "whole", data)
    data[:, :78] = np.nan  # 30 of the crop's 96 columns
    written(folder, "edge", data)
    shutil.copy(sorted(EXAMPLES.glob("*.jpeg"))[0], folder / "photo.jpeg")
    out = tmp_path / ("ray" if ray else "out.csv")
    args = ["classify", str(folder), "-o", str(out), "-q", "--backend", "onnxruntime", "--decoder", "reference"]
    if ray:
        from engine.ray_shards import write_shards
        from engine.ray_actor import ShardClassifier
        from galaxy.config import ClassifyConfig

        config = ClassifyConfig((str(folder),), str(out), backend="onnxruntime", decoder="reference", progress=False)
        (shard,) = write_shards(config, out, 100)
        rows, failed, _, masked = ShardClassifier(config, str(default_model[0]), str(out)).classify_shard(
            shard.index, shard.path)
        assert (rows, failed, masked.count, masked.ids) == (3, 0, 1, ["edge"])
        assert masked.largest == pytest.approx(30 / 96)
        return
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = Table.read(out)
    share = {row["id"]: row["masked_fraction"] for row in table}
    assert share["whole"] == 0.0 and share["edge"] == pytest.approx(30 / 96, abs=1e-6)
    assert np.ma.is_masked(share["photo"])
    assert table.colnames[-3:] == ["ra", "dec", "masked_fraction"]
    lines = [r.getMessage() for r in caplog.records if "pixels the network reads were masked" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("1 row: ") and "largest 31%: id edge)" in lines[0]
    page = tmp_path / "report.html"  # and the report counts them
    assert CliRunner().invoke(cli, ["report", str(out), "-o", str(page)]).exit_code == 0
    assert ("<th>crop over 10% masked and filled</th><td>1 (<code>masked_fraction &gt; 0.1</code>)</td>"
            in page.read_text())
    import csv  # a catalog from before the column: not counted as none (review)

    with open(out, newline="") as fh:
        rows = [{k: v for k, v in row.items() if k != "masked_fraction"} for row in csv.DictReader(fh)]
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert CliRunner().invoke(cli, ["report", str(out), "-o", str(page)]).exit_code == 0
    assert "masked and filled" not in page.read_text()


@pytest.mark.parametrize("dtype, blank, cards", [
    (">i2", -32768, {}), (">i2", -32768, {"BZERO": 32768}), (">i2", 0, {}), (">i2", 0, {"BSCALE": 2.0}),
    ("u1", 0, {"BZERO": -128}), (">i2", -32768, {"BSCALE": 0.5, "BZERO": 10.0})])
def test_null_pixels_of_an_integer_image_are_masked_and_counted(tmp_path, dtype, blank, cards):
    """astropy reads a pseudo-unsigned image (BZERO = 32768 over int16, -128 over bytes) as integers with its
    BLANK pixels as a value, and leaves them as 0 * BSCALE + BZERO where BLANK is 0: classified as measured sky
    with masked_fraction 0.0. They are masked now, and such a file goes to the reference reader, not DALI
    (which read BLANK as data). Written byte for byte, as a survey's pipeline writes them."""
    from galaxy.io.fits_hdus import locate_image

    raw = np.clip(disc_galaxy() / 8, 1, 250).astype(dtype)  # no measured pixel is the null value
    raw[:, :72] = blank  # over a quarter of the crop's columns
    header = fits.PrimaryHDU(raw.astype(raw.dtype.newbyteorder("="))).header
    header["BLANK"] = blank
    header.update(cards)
    data = raw.astype(raw.dtype.newbyteorder(">")).tobytes()
    path = tmp_path / "counts.fits"
    path.write_bytes(header.tostring().encode() + data + bytes(-len(data) % 2880))
    pixels, meta = read_fits_cutout(path, SPEC)
    assert meta["masked_fraction"] == pytest.approx(0.25) and np.isfinite(pixels).all()
    assert locate_image(path).scaled  # handed to the reference reader by the batch decoders


def test_blank_over_a_float_image_masks_nothing(tmp_path):
    """BLANK means nothing over float pixels (the standard; astropy ignores it): a BLANK = 0 card there had every
    pixel exactly 0.0 masked (review)."""
    data = disc_galaxy()
    data[90:100, 90:100] = 0.0  # measured zeros inside the crop
    hdu = fits.PrimaryHDU(data)
    hdu.header["BLANK"] = 0
    path = tmp_path / "float.fits"
    hdu.writeto(path)
    pixels, meta = read_fits_cutout(path, SPEC)
    assert meta["masked_fraction"] == 0.0 and np.isfinite(pixels).all()
