"""A corpus of broken files among good ones: each broken file gets an error row with a reason,
every good file is classified, the exit code is 3, and nothing prints a traceback."""

import csv
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner
from PIL import Image

from galaxy.cli import cli
from tests.conftest import EXAMPLES
from tests.galaxy.test_fits import galaxy_image


def build_corpus(root):
    """Returns (good file names, {broken file name: expected words in the reason})."""
    jpeg = sorted(EXAMPLES.glob("*.jpeg"))[0]
    src = Image.open(jpeg)
    good, bad = [], {}

    def add_good(name):
        good.append(name)

    shutil.copy(jpeg, root / "plain.jpeg"), add_good("plain.jpeg")
    src.convert("CMYK").save(root / "cmyk.jpg"), add_good("cmyk.jpg")
    Image.fromarray((np.asarray(src.convert("L"), np.uint16) * 257)).save(root / "grey16.png"), add_good("grey16.png")
    src.quantize(32).save(root / "palette.png"), add_good("palette.png")
    src.convert("RGBA").save(root / "alpha.png"), add_good("alpha.png")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(galaxy_image(64))]).writeto(root / "ext.fits"), add_good("ext.fits")
    name = os.fsdecode(b"caf\xe9.jpeg")
    shutil.copy(jpeg, root / name), add_good(name)
    (root / "a").mkdir(), (root / "b").mkdir()
    shutil.copy(jpeg, root / "a" / "twin.jpeg"), add_good("a/twin.jpeg")
    shutil.copy(jpeg, root / "b" / "twin.jpeg"), add_good("b/twin.jpeg")
    (root / "folder.jpg").mkdir()  # a directory named like an image: walked, holds nothing

    (root / "zero.jpg").write_bytes(b"")
    bad["zero.jpg"] = "an empty file"
    (root / "truncated.jpeg").write_bytes(jpeg.read_bytes()[:3000])
    bad["truncated.jpeg"] = "truncated"
    rng = np.random.default_rng(1)
    for name in ("random.jpg", "random.png", "random.fits"):
        (root / name).write_bytes(rng.bytes(4000))
        bad[name] = "not a" if name != "random.fits" else "fits"
    (root / "dangling.jpeg").symlink_to(root / "nowhere.jpeg")
    bad["dangling.jpeg"] = "no such file"
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    bad["loop.jpg"] = "symbolic links"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]).writeto(
        root / "table.fits")
    bad["table.fits"] = "no hdu with 2-d or 3-d image data"
    fits.PrimaryHDU(np.full((16, 16), np.nan, np.float32)).writeto(root / "allnan.fits")
    bad["allnan.fits"] = "no finite pixel"
    fits.PrimaryHDU(np.zeros((16, 16), np.float32)).writeto(root / "allzero.fits")
    bad["allzero.fits"] = "constant"
    fits.PrimaryHDU(np.ones(16, np.float32)).writeto(root / "line.fits")
    bad["line.fits"] = "no hdu with 2-d or 3-d image data"
    fits.PrimaryHDU(np.ones((2, 2, 16, 16), np.float32)).writeto(root / "hyper.fits")
    bad["hyper.fits"] = "4 dimensions"
    full = root / "full.tmp"
    fits.PrimaryHDU(galaxy_image(64)).writeto(full)
    (root / "short.fits").write_bytes(full.read_bytes()[:2880 + 4000])
    full.unlink()
    bad["short.fits"] = "truncated"
    header = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 100000, "NAXIS2": 100000})
    (root / "huge.fits").write_bytes(header.tostring().encode() + b"\0" * 2880)
    bad["huge.fits"] = "over the limit"
    (root / "huge.fits.gz").write_bytes(gzip.compress((root / "huge.fits").read_bytes()))
    bad["huge.fits.gz"] = "over the limit"
    for kind in ("RICE_1", "GZIP_1"):  # tile data overwritten: cfitsio's error, gzip's EOFError (both ended the run)
        tiled = root / f"tiles-{kind}.fits.fz"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(galaxy_image(128), compression_type=kind)]).writeto(tiled)
        data = bytearray(tiled.read_bytes())
        data[-2880 - 1500:-2880 - 500] = bytes(range(256)) * 3 + bytes(232)
        tiled.write_bytes(bytes(data))
        bad[tiled.name] = "corrupt fits data"
    return good, bad


@pytest.mark.parametrize("decoder", ["reference", "auto"])
def test_broken_corpus(tmp_path, decoder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good, bad = build_corpus(corpus)
    out = tmp_path / "c.csv"
    result = CliRunner().invoke(cli, ["classify", str(corpus), "-o", str(out), "-q", "--decoder", decoder,
                                      "--backend", "onnxruntime"])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    classified = sorted(os.path.relpath(r["path"], corpus) for r in rows)
    expected_good = sorted(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                           for name in good)
    assert classified == expected_good
    twins = sorted(r["id"] for r in rows if r["path"].endswith("twin.jpeg"))
    assert twins == ["twin", "twin#2"]  # same stem in two folders: ids stay unique
    with open(tmp_path / "c.csv.errors.csv", newline="") as fh:
        errors = {os.path.relpath(e["path"], corpus): e for e in csv.DictReader(fh)}
    assert set(errors) == set(bad)
    for name, words in bad.items():
        assert words in errors[name]["reason"].lower(), (name, errors[name]["reason"])


UNREADABLE_SCRIPT = """
import sys
from engine.listing import Item
from engine.pipelines.base import decode_item
from galaxy.spec import InputSpec
decoded = decode_item(Item(sys.argv[1]), InputSpec())
print(decoded.error.stage, decoded.error.reason if decoded.error else "read")
"""


def test_unreadable_file_is_reported_with_the_reason(real_jpeg):
    """A file without read permission. Root reads everything, so as root the check runs without the
    capabilities that let it (setpriv)."""
    import subprocess
    import sys
    import tempfile

    from tests.conftest import ROOT

    folder = Path(tempfile.mkdtemp(prefix="galaxy-perm-"))
    try:
        folder.chmod(0o755)
        locked = folder / "locked.jpeg"
        shutil.copy(real_jpeg, locked)
        locked.chmod(0)
        command = [sys.executable, "-c", UNREADABLE_SCRIPT, str(locked)]
        if os.geteuid() == 0:  # root reads any file: run without the capabilities that let it (CI runs as root)
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root, and setpriv (util-linux) is not there to drop CAP_DAC_OVERRIDE")
            drop = "-dac_override,-dac_read_search"
            done = subprocess.run([setpriv, "--bounding-set", drop, "--inh-caps", drop, *command], cwd=ROOT,
                                  capture_output=True, text=True)
            if done.returncode != 0 and "setpriv" in done.stderr:
                pytest.skip(f"running as root, and setpriv cannot drop the capabilities here: {done.stderr[-200:]}")
        else:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "permission denied" in done.stdout.lower(), done.stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_catalog_rows_without_a_file_are_errors_that_carry_their_id(tmp_path):
    """An empty path cell names no file (it used to resolve to the catalog's folder: "is a
    directory"); the errors file gives each failed row's catalog id, so the row can be found."""
    from tests.galaxy.test_fits import galaxy_image

    jpeg = sorted(EXAMPLES.glob("*.jpeg"))[0]
    band = tmp_path / "g.fits"
    fits.PrimaryHDU(galaxy_image(64)).writeto(band)
    (tmp_path / "single.csv").write_text(f"objid,file\n101,{jpeg}\n102,\n103,missing.jpeg\n")
    (tmp_path / "bands.csv").write_text(f"objid,g,r\n201,{band},\n")
    runner = CliRunner()
    single = runner.invoke(cli, ["classify", "--catalog", str(tmp_path / "single.csv"), "-o", str(tmp_path / "a.csv"),
                                 "-q", "--backend", "onnxruntime"])
    bands = runner.invoke(cli, ["classify", "--catalog", str(tmp_path / "bands.csv"), "--band-columns", "g=g,r=r",
                                "-o", str(tmp_path / "b.csv"), "-q", "--backend", "onnxruntime"])
    assert single.exit_code == 3 and bands.exit_code == 3, single.output + bands.output
    with open(tmp_path / "a.csv.errors.csv", newline="") as fh:
        errors = {e["id"]: e for e in csv.DictReader(fh)}
    assert set(errors) == {"102", "103"}
    assert errors["102"]["path"] == "" and "empty path" in errors["102"]["reason"]
    assert errors["103"]["path"] == str(tmp_path / "missing.jpeg") and "no such file" in errors["103"]["reason"].lower()
    with open(tmp_path / "b.csv.errors.csv", newline="") as fh:
        (error,) = csv.DictReader(fh)
    assert error["id"] == "201" and "empty path for band r" in error["reason"]


def _classify_with_failures(folder, out, decoder):
    """(ids classified, {id: reason} of the errors file) of `classify folder -o out`, which must exit 3."""
    result = CliRunner().invoke(cli, ["classify", str(folder), "-o", str(out), "-q", "--decoder", decoder,
                                      "--backend", "onnxruntime"])
    assert result.exit_code == 3, result.output
    with open(out, newline="") as fh:
        classified = [row["id"] for row in csv.DictReader(fh)]
    with open(f"{out}.errors.csv", newline="") as fh:
        return classified, {row["id"]: row["reason"] for row in csv.DictReader(fh)}


@pytest.mark.parametrize("decoder", ["reference", "auto"])
def test_images_too_small_to_be_cutouts_are_refused_by_every_reader(tmp_path, decoder):
    """5 x 5 noise, a 3 x 2000 strip and a 2 x 100 image were given confident labels (p ~0.87)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "small"
    folder.mkdir()
    fits.PrimaryHDU(rng.normal(size=(5, 5)).astype(np.float32)).writeto(folder / "noise.fits")
    fits.PrimaryHDU(rng.normal(size=(2000, 3)).astype(np.float32)).writeto(folder / "strip.fits")
    Image.fromarray(rng.integers(0, 255, (100, 2, 3), np.uint8)).save(folder / "thin.jpeg")
    Image.fromarray(rng.integers(0, 255, (15, 40, 3), np.uint8)).save(folder / "short.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(folder / "smallest.jpeg")  # taken
    classified, reasons = _classify_with_failures(folder, tmp_path / "c.csv", decoder)
    assert classified == ["smallest"]
    assert reasons == {"noise": "5 x 5 pixels is too small for a cutout (at least 16 on each side)",
                       "short": "40 x 15 pixels is too small for a cutout (at least 16 on each side)",
                       "strip": "3 x 2000 pixels is too small for a cutout (at least 16 on each side)",
                       "thin": "2 x 100 pixels is too small for a cutout (at least 16 on each side)"}


@pytest.mark.parametrize("decoder", ["reference", "auto"])
def test_blank_cutouts_are_refused_by_every_reader(tmp_path, decoder):
    """An all-black JPEG was called elliptical with p 0.94, an all-white PNG spiral (0.61): blank cutouts
    (off a survey's footprint) are common, and the FITS reader already refused a constant image. A
    crop of one value everywhere now goes to the errors file; a galaxy and light only outside the crop
    do not count (the crop is what the network reads)."""
    folder = tmp_path / "blank"
    folder.mkdir()
    Image.new("RGB", (424, 424)).save(folder / "black.jpeg")
    Image.new("RGB", (424, 424), (255, 255, 255)).save(folder / "white.png")
    Image.new("RGBA", (424, 424), (0, 0, 0, 0)).save(folder / "transparent.png")
    Image.fromarray(np.zeros((424, 424), np.uint16)).save(folder / "zero16.png")
    corner = np.zeros((424, 424, 3), np.uint8)
    corner[:20, :20] = 200  # outside the central half the network reads
    Image.fromarray(corner).save(folder / "corner.jpeg")
    for side in (200, 300):  # resampled in float32, a constant image is no longer exactly constant
        Image.new("RGB", (side, side), (128, 128, 128)).save(folder / f"grey{side}.jpeg")
    Image.new("RGB", (256, 80), (255, 255, 255)).save(folder / "wide.png")  # padded with zeros past its short side
    shutil.copy(sorted(EXAMPLES.glob("*.jpeg"))[0], folder / "galaxy.jpeg")
    classified, reasons = _classify_with_failures(folder, tmp_path / "c.csv", decoder)
    assert classified == ["galaxy"]
    assert sorted(reasons) == ["black", "corner", "grey200", "grey300", "transparent", "white", "wide", "zero16"]
    assert all(reason.startswith("blank: every pixel of the crop the network reads has one value")
               for reason in reasons.values())
    assert "(1, 1, 1)" in reasons["white"] and "(0, 0, 0)" in reasons["black"]


def test_the_python_api_refuses_a_blank_image_as_the_readers_do():
    from galaxy.api import load_model
    from galaxy.errors import UsageError

    model = load_model(backend="onnxruntime")
    with pytest.raises(UsageError, match="image 1: blank: every pixel"):
        galaxy = np.asarray(Image.open(sorted(EXAMPLES.glob("*.jpeg"))[0]))
        model.classify_arrays(np.stack([galaxy, np.zeros_like(galaxy)]))


def test_blank_is_judged_on_every_pixel_of_the_crop_not_only_the_coarse_grid_that_answers_first():
    """`blank_reason` answers from a coarse grid of the crop where that grid already varies (a galaxy;
    reducing the whole crop had cost 2 ms of the reference reader's ~4 ms per cutout): one pixel off
    the grid that differs still makes a crop not blank, and NaN on the grid does not hide a blank."""
    from galaxy.io.images import blank_reason

    pixels = np.full((424, 424, 3), 0.5, np.float32)
    assert blank_reason(pixels, 0.5).startswith("blank")
    pixels[200, 201, 1] = 0.6  # inside the crop (106..318), on no 8-pixel grid point
    assert blank_reason(pixels, 0.5) is None
    grey = np.full((424, 424), 0.5, np.float32)  # (H, W): one band
    grey[106, 106] = 0.5 + 5e-5  # within the spread, on the grid
    assert "(0.5)" in blank_reason(grey, 0.5)
    grey[:, :] = np.random.default_rng(0).random((424, 424), np.float32)
    assert blank_reason(grey, 0.5) is None
    grey[106, 106] = np.nan  # non-finite pixels are refused after the resize with their own reason
    assert blank_reason(grey, 0.5) is None


def test_blank_samples_of_a_batch():
    from engine.pipelines.base import blank_samples

    batch = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
    batch[1] = np.array([-1.0, 0.5, 2.0], np.float32)[:, None, None]  # one value per channel...
    batch[1, :, 0, 0] += 1e-6  # ...up to what float32 resampling leaves
    batch[2, 0] = 0.25  # one channel constant, the others not
    assert blank_samples(batch) == [False, True, False]
    torch = pytest.importorskip("torch")
    assert blank_samples(torch.from_numpy(batch)) == [False, True, False]


def test_missing_files_and_headers_lacking_a_key_are_named_as_such(tmp_path):
    """A missing file read "not a readable FITS file ([Errno 2] ...)" or an errno, each reader its
    own way; a header promising NAXIS = 3 without NAXIS3 read "('NAXIS3')"."""
    text = fits.PrimaryHDU(np.ones((32, 32), np.float32)).header.tostring()
    data = np.ones((32, 32), ">f4").tobytes()
    (tmp_path / "naxis.fits").write_bytes(text.replace("NAXIS   =                    2",
                                                       "NAXIS   =                    3").encode() + data)
    (tmp_path / "c.csv").write_text("file\nnope.fits\nnope.jpeg\nnaxis.fits\n")
    result = CliRunner().invoke(cli, ["classify", "--catalog", str(tmp_path / "c.csv"), "-o", str(tmp_path / "o.csv"),
                                      "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 3, result.output
    with open(tmp_path / "o.csv.errors.csv", newline="") as fh:
        reasons = [row["reason"] for row in csv.DictReader(fh)]
    assert reasons == ["no such file", "no such file", "not a readable FITS file: the header lacks 'NAXIS3'"]


@pytest.mark.parametrize("padded, words", [
    (False, "7744 bytes follow the data of its last HDU and are no FITS header: that header's shape (NAXISn 32 x "
            "64, BITPIX -32) does not describe all the data"),
    (True, "not a readable FITS file: a header without its END card (the file cut short or damaged inside a header, "
           "or a header's NAXISn or BITPIX not matching the data after it"),
])
def test_a_header_whose_naxis_does_not_match_its_data_is_refused_saying_so(tmp_path, padded, words):
    """NAXIS1 = 32 over 64 x 64 pixels. Written without padding, astropy read the header's 32 x 64 from the
    rows, only warning, and the garbled image was classified; padded to whole blocks, astropy looked for
    the next header inside the data and the run said only "OSError: Header missing END card."."""
    pixels = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    if padded:
        fits.PrimaryHDU(pixels).writeto(tmp_path / "whole.fits")
        written = (tmp_path / "whole.fits").read_bytes()
    else:
        written = fits.PrimaryHDU(pixels).header.tostring().encode() + pixels.astype(">f4").tobytes()
    (tmp_path / "naxis.fits").write_bytes(written.replace(b"NAXIS1  =                   64",
                                                          b"NAXIS1  =                   32", 1))
    result = CliRunner().invoke(cli, ["classify", str(tmp_path / "naxis.fits"), "-o", str(tmp_path / "o.csv"), "-q",
                                      "--backend", "onnxruntime"])
    assert result.exit_code == 3, result.output
    with open(tmp_path / "o.csv.errors.csv", newline="") as fh:
        (row,) = csv.DictReader(fh)
    assert row["path"].endswith("naxis.fits") and row["reason"].startswith(words)


def test_bytes_after_the_data_of_a_gzipped_file_are_refused_from_its_headers_alone(tmp_path):
    """astropy reads a .fits.gz as a stream of unknown size, and the check had passed it where the headers alone
    are read (`locate_image`, what the GPU's DALI decoder asks before it reads the pixels itself)."""
    import gzip

    from galaxy.errors import ImageReadError
    from galaxy.io.fits_hdus import locate_image

    fits.PrimaryHDU(galaxy_image()).writeto(tmp_path / "g.fits")
    (tmp_path / "g.fits.gz").write_bytes(gzip.compress((tmp_path / "g.fits").read_bytes() + b"appended notes"))
    with pytest.raises(ImageReadError, match="bytes follow the data of its last HDU"):
        locate_image(tmp_path / "g.fits.gz")
    (tmp_path / "ok.fits.gz").write_bytes(gzip.compress((tmp_path / "g.fits").read_bytes()))
    assert locate_image(tmp_path / "ok.fits.gz").hdus == (0,)


def test_zero_padding_after_the_last_hdu_is_no_reason_to_refuse(tmp_path):
    """astropy reads zero bytes after the last HDU as padding (with a note): the file is read as before."""
    from galaxy.io.fits import read_fits_cutout
    from galaxy.spec import InputSpec

    fits.PrimaryHDU(galaxy_image()).writeto(tmp_path / "g.fits")
    with open(tmp_path / "g.fits", "ab") as fh:
        fh.write(bytes(5000))
    pixels, _ = read_fits_cutout(tmp_path / "g.fits", InputSpec(size=32, crop_fraction=0.5))
    assert np.isfinite(pixels).all()


@pytest.mark.parametrize("option, words", [
    (["--hdu", "-1"], "an HDU index counts from 0"), (["--hdu", ""], "--hdu is empty"),
    (["--bands", "x,y,z"], "'x' is not a band name"), (["--bands", "i,2,g"], "not both"),
])
def test_hdu_and_bands_that_name_nothing_are_usage_errors(tmp_path, option, words):
    """--hdu '' matched an unnamed extension's EXTNAME and -1 was taken as a name; --bands x,y,z
    said "names or plane numbers, not both" with no number given."""
    fits.PrimaryHDU(galaxy_image()).writeto(tmp_path / "g.fits")
    result = CliRunner().invoke(cli, ["classify", str(tmp_path / "g.fits"), "-o", str(tmp_path / "o.csv"), *option])
    assert result.exit_code == 2 and words in result.output, result.output


@pytest.mark.parametrize("kind", ["csv", "ecsv", "fits", "parquet"])
def test_a_damaged_input_catalog_is_one_line_naming_it(tmp_path, kind):
    """An unclosed quote (csv.Error), a short ECSV row, a FITS table cut short (TypeError) and a damaged
    Parquet page (an OSError without a file name) each ended in a traceback, mid-run after rows were
    classified (review of classify at scale)."""
    from astropy.table import Table

    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:40]]
    catalog = tmp_path / f"cat.{kind}"
    table = Table({"objid": [f"g{i}" for i in range(len(files))], "file": files})
    if kind == "csv":  # an unclosed quote takes the rows after it into one cell, past csv's field limit
        lines = ["objid,file"] + [f"g{i},{files[i % len(files)]}" for i in range(5000)]
        lines.insert(5, 'x,"unclosed.jpeg')
        catalog.write_text("\n".join(lines) + "\n")
    elif kind == "ecsv":
        table.write(catalog, format="ascii.ecsv")
        catalog.write_text(catalog.read_text() + "g99\n")
    elif kind == "fits":
        table.write(catalog)
        data = catalog.read_bytes()
        catalog.write_bytes(data[:len(data) - 2880])  # the last block of the table cut off
    else:
        table.write(catalog)
        data = bytearray(catalog.read_bytes())
        data[100:400] = bytes(300)  # a data page zeroed
        catalog.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["classify", "--catalog", str(catalog), "-o", str(tmp_path / "out.csv"), "-q",
                                      "--backend", "onnxruntime"])
    assert result.exit_code == 2 and f"Error: cannot read catalog {catalog}" in result.output, result.output
    if kind == "csv":
        assert "line " in result.output and "field larger than field limit" in result.output


@pytest.mark.parametrize("content, reason", [
    (b'objid,file\ng0,a.jpeg\ng1,"b.jpeg\ng2,c.jpeg\n', "line 3: unexpected end of data"),
    (b'objid,file\ng0,a.jpeg\ng1,"b"x.jpeg\n', "line 3: ',' expected after '\"'"),
    (b'objid,file\ng0,a.jpeg\ng1,b\xff.jpeg\n', "not UTF-8 text (line 3"),
    (b'obj\xffid,file\ng0,a.jpeg\n', "not UTF-8 text (line 1")])
def test_a_small_damaged_csv_catalog_is_refused_naming_its_line(tmp_path, content, reason):
    """Below csv's field limit an unclosed quote took the rows after it into one cell, read without error:
    they failed as one unreadable path; a byte that is not UTF-8 was named by its offset in a decode
    chunk (session 39)."""
    catalog = tmp_path / "cat.csv"
    catalog.write_bytes(content)
    result = CliRunner().invoke(cli, ["classify", "--catalog", str(catalog), "-o", str(tmp_path / "out.csv"), "-q",
                                      "--backend", "onnxruntime"])
    assert result.exit_code == 2 and f"Error: cannot read catalog {catalog}" in result.output, result.output
    assert reason in result.output, result.output


def test_a_catalog_galaxy_wrote_of_a_non_utf8_name_reads_back_as_a_catalog(tmp_path):
    """A file whose name is not UTF-8 is written as `bad\\xff\\xfe.jpeg`; fed back as --catalog that
    path was "no such file" (review of classify at scale)."""
    folder = tmp_path / "in"
    folder.mkdir()
    sample = sorted(EXAMPLES.glob("*.jpeg"))[0]
    odd = os.path.join(os.fsencode(folder), b"bad\xff\xfe.jpeg")
    shutil.copy(sample, odd)
    first = tmp_path / "first.csv"
    assert CliRunner().invoke(cli, ["classify", str(folder), "-o", str(first), "-q",
                                    "--backend", "onnxruntime"]).exit_code == 0
    assert "\\xff\\xfe" in first.read_text()
    again = tmp_path / "again.csv"
    result = CliRunner().invoke(cli, ["classify", "--catalog", str(first), "--path-column", "path", "-o", str(again),
                                      "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    with open(again, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 1
