"""Catalog columns an astronomer joins on: kept input columns, and RA/Dec from FITS headers."""

import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, join
from astropy.wcs import WCS
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.io.fits_hdus import locate_image
from galaxy.io.images import read_raster
from galaxy.io.sky import MAX_CATALOG_OFFSET, OffCentreRows, catalog_offset, centre_position
from tests.conftest import EXAMPLES


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _wcs_header(ra, dec, n):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]  # FITS pixels are 1-based: the centre of an n-pixel axis
    wcs.wcs.cdelt = [-0.396 / 3600, 0.396 / 3600]  # SDSS pixels
    return wcs.to_header()


def _fits_cutouts(folder, n_files=4):
    """Real cutouts as FITS band cubes with a celestial WCS centred on known positions."""
    folder.mkdir()
    positions = {}
    for k, jpeg in enumerate(sorted(EXAMPLES.glob("*.jpeg"))[:n_files]):
        rgb = read_raster(jpeg)
        cube = np.moveaxis(rgb, -1, 0)[:, ::-1].astype(np.float32)  # FITS rows run bottom to top
        ra, dec = 150.0 + k, -1.5 + 0.5 * k
        header = fits.Header()
        header.update(_wcs_header(ra, dec, rgb.shape[1]))
        header["OBJID"] = f"g{k}"
        fits.PrimaryHDU(cube, header=header).writeto(folder / f"g{k}.fits")
        positions[f"g{k}"] = (ra, dec)
    return positions


def test_centre_position_from_wcs_or_from_keys():
    header = _wcs_header(210.25, 54.3, 64)
    header.update({"NAXIS1": 64, "NAXIS2": 64})
    assert centre_position(header) == pytest.approx((210.25, 54.3), abs=1e-9)
    keys = fits.Header({"RA": "14:01:00.0", "DEC": "-05:30:00"})
    assert centre_position(keys) == pytest.approx((210.25, -5.5))
    assert centre_position(fits.Header({"OBJRA": 10.5, "OBJDEC": 2.25})) == (10.5, 2.25)
    assert centre_position(fits.Header({"RA": "nonsense", "DEC": 3})) is None
    assert centre_position(fits.Header({"DEC": 3.0})) is None


@pytest.mark.parametrize("keys, expected", [
    ({"CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN", "CRVAL1": 2.2, "CRVAL2": 150.0}, (150.0, 2.2)),  # axes swapped
    ({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.2, "RADESYS": "FK4",
      "EQUINOX": 1950.0}, (150.645604, 1.958128)),  # B1950 coordinates, 0.6 degrees from ICRS
    ({"CTYPE1": "GLON-TAN", "CTYPE2": "GLAT-TAN", "CRVAL1": 236.8, "CRVAL2": 42.1}, (150.091954, 2.206721)),
])
def test_centre_position_is_icrs_whatever_the_header_frame(keys, expected):
    header = fits.Header({"NAXIS": 2, "NAXIS1": 101, "NAXIS2": 101, "CRPIX1": 51.0, "CRPIX2": 51.0,
                          "CDELT1": -1e-4, "CDELT2": 1e-4, **keys})
    assert centre_position(header) == pytest.approx(expected, abs=2e-6)


@pytest.mark.parametrize("frame, expected", [
    ({"EQUINOX": 1950.0}, (150.645604, 1.958128)),  # FK4 by its equinox (had been written as they were)
    ({"RADESYS": "FK4", "EQUINOX": 1950.0}, (150.645604, 1.958128)),  # as the WCS test above gives it
    ({"EPOCH": 1950.0}, (150.645604, 1.958128)),  # EQUINOX's old name
    ({"EPOCH": 2003.5}, (150.0, 2.2)),  # an observation date, as EPOCH often is: no equinox
    ({"EQUINOX": 2000.0}, (150.0, 2.2)), ({"RADESYS": "ICRS"}, (150.0, 2.2)), ({}, (150.0, 2.2)),
    ({"RADESYS": "GAPPT"}, None), ({"EQUINOX": "J2000x"}, None),  # no frame to convert from: no position
])
def test_position_keys_are_turned_into_icrs_from_their_headers_frame(frame, expected):
    found = centre_position(fits.Header({"RA": 150.0, "DEC": 2.2, **frame}))
    assert found is None if expected is None else found == pytest.approx(expected, abs=2e-6)


@pytest.mark.parametrize("key", ["CRVAL1", "CRPIX2", "CDELT1"])
def test_a_wcs_key_that_is_not_a_number_gives_no_position_from_the_wcs(key):
    """astropy.wcs reads CRVAL1 = 'abc' as 0: the centre came out at RA 359.99 instead of unknown."""
    header = fits.Header({"NAXIS": 2, "NAXIS1": 101, "NAXIS2": 101, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
                          "CRVAL1": 150.0, "CRVAL2": 2.2, "CRPIX1": 51.0, "CRPIX2": 51.0, "CDELT1": -1e-4,
                          "CDELT2": 1e-4})
    assert centre_position(header) == pytest.approx((150.0, 2.2))
    header[key] = "abc"
    assert centre_position(header) is None
    header.update({"RA": 150.5, "DEC": 2.5})  # position keys are still read
    assert centre_position(header) == (150.5, 2.5)


@pytest.mark.parametrize("drop", [("CRVAL1", "CRVAL2", "CDELT1", "CDELT2"), ("CRVAL1", "CRVAL2"), ("CRVAL2",)])
def test_a_wcs_of_ctypes_alone_gives_way_to_the_position_keys(drop):
    """CTYPE1/2 without CRVAL or a scale: astropy fills in CRVAL 0 and 1 degree a pixel, and the row got a
    position ~160 degrees off, over the header's own RA/DEC keys; review of FITS inputs, session 39."""
    header = fits.Header({"NAXIS": 2, "NAXIS1": 101, "NAXIS2": 101, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
                          "CRVAL1": 150.0, "CRVAL2": 2.2, "CRPIX1": 51.0, "CRPIX2": 51.0, "CDELT1": -1e-4,
                          "CDELT2": 1e-4, "RA": 215.88006, "DEC": 2.8123})
    assert centre_position(header) == pytest.approx((150.0, 2.2))
    for key in drop:
        del header[key]
    assert centre_position(header) == (215.88006, 2.8123)
    header.update({"CRVAL1": 150.0, "CRVAL2": 2.2})
    for key in ("CDELT1", "CDELT2"):
        header.remove(key, ignore_missing=True)
    assert centre_position(header) == pytest.approx((150.0, 2.2))  # no scale: FITS's default, the centre holds


def test_fits_output_has_ra_dec_with_units_from_the_headers(tmp_path):
    positions = _fits_cutouts(tmp_path / "cutouts")
    assert locate_image(tmp_path / "cutouts" / "g1.fits").sky == pytest.approx(positions["g1"])
    out = tmp_path / "out.fits"
    result = invoke("classify", tmp_path / "cutouts", "-o", out, "-q", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    table = Table.read(out)
    assert table.colnames[-3:] == ["ra", "dec", "masked_fraction"] and str(table["ra"].unit) == "deg"
    for row in table:
        assert (row["ra"], row["dec"]) == pytest.approx(positions[row["id"]], abs=1e-9)
    if not shutil.which("fitsverify"):
        pytest.skip("fitsverify is not installed: the columns above were checked, fitsverify's verdict was not")
    report = subprocess.run(["fitsverify", str(out)], capture_output=True, text=True).stdout
    assert "0 warning(s) and 0 error(s)" in report


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".parquet"])
def test_a_catalog_of_fits_inputs_has_ra_dec_though_no_header_gives_a_position(tmp_path, suffix):
    """The columns followed the headers: a job array's chunk whose FITS files had no position lacked them, and
    chunks of one survey could not be stacked (STILTS tcat refused); carried since session 36."""
    folder = tmp_path / "in"
    folder.mkdir()
    fits.PrimaryHDU(np.moveaxis(read_raster(sorted(EXAMPLES.glob("*.jpeg"))[0]), -1, 0)[:, ::-1].astype(np.float32)
                    ).writeto(folder / "plain.fits")
    out = tmp_path / f"out{suffix}"
    assert invoke("classify", folder, "-o", out, "-q", "--backend", "onnxruntime").exit_code == 0
    table = Table.read(out)
    assert table.colnames[-3:] == ["ra", "dec", "masked_fraction"] and list(table["masked_fraction"]) == [0.0]
    for name in ("ra", "dec"):  # missing: masked (CSV's empty cell, FITS's NaN as astropy reads it) or NaN
        missing = np.ma.getmaskarray(table[name]) | np.isnan(np.asarray(np.ma.getdata(table[name]), float))
        assert missing.all()


def test_jpeg_only_runs_have_no_sky_columns(tmp_path):
    out = tmp_path / "out.csv"
    assert invoke("classify", *sorted(EXAMPLES.glob("*.jpeg"))[:3], "-o", out, "-q").exit_code == 0
    assert out.read_text().splitlines()[0] == "id,path,p_elliptical,p_spiral,label"


@pytest.mark.parametrize("suffix", [".fits", ".parquet", ".csv", ".ecsv"])
def test_kept_catalog_columns_join_back_to_the_survey_catalog(tmp_path, suffix, default_model):
    files = sorted(EXAMPLES.glob("*.jpeg"))[:6]
    survey = Table({"objid": [f"s{k}" for k in range(6)], "file": [str(f) for f in files],
                    "ra": np.linspace(120, 121, 6), "dec": np.linspace(-2, 2, 6), "redshift": np.linspace(0.01, 0.2, 6),
                    "field": [f"run{k % 2}" for k in range(6)], "petro_r50": np.linspace(1.5, 4.0, 6)})
    survey["ra"].unit = survey["dec"].unit = "deg"
    survey["petro_r50"].unit = "arcsec"
    survey.write(tmp_path / "survey.ecsv")
    out = tmp_path / f"out{suffix}"
    args = ["classify", "--catalog", tmp_path / "survey.ecsv", "--keep-columns", "ra,dec,redshift,field,petro_r50", "-o", out, "-q"]
    assert invoke(*args).exit_code == 0
    assert invoke(*args).exit_code == 0  # a rerun resumes from the finished catalog and keeps the columns
    table = Table.read(out) if suffix != ".csv" else Table.read(out, format="ascii.csv")
    assert table.colnames == ["id", "path", "p_elliptical", "p_spiral", "label", "ra", "dec", "redshift", "field",
                              "petro_r50"]
    joined = join(survey, table, keys_left="objid", keys_right="id", table_names=["survey", "out"])
    assert len(joined) == 6
    np.testing.assert_allclose(joined["redshift_out"], joined["redshift_survey"])
    np.testing.assert_allclose(joined["ra_out"], joined["ra_survey"])
    assert list(joined["field_out"]) == list(joined["field_survey"])
    if suffix in (".fits", ".ecsv"):  # units (from the input catalog) and metadata travel in the file itself
        assert str(table["ra"].unit) == "deg" and str(table["petro_r50"].unit) == "arcsec"
        assert table["redshift"].unit is None
        assert {k.lower(): v for k, v in table.meta.items()}["model"] == default_model[1].name
    if suffix == ".fits":
        assert str(table["ra"].unit) == "deg" and table["redshift"].dtype.kind == "f" and table["redshift"].dtype.itemsize == 8


def test_format_overrides_the_extension_and_unknown_formats_are_refused(tmp_path):
    out = tmp_path / "results.dat"
    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    assert invoke("classify", *files, "-o", out, "--format", "parquet", "-q").exit_code == 0
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 2
    result = invoke("classify", *files, "-o", tmp_path / "x.dat", "--format", "votable", "-q")
    assert result.exit_code == 2 and "votable" in result.output
    result = invoke("classify", *files, "-o", tmp_path / "x.dat", "-q")
    assert result.exit_code == 2 and "cannot tell the output format" in result.output


def test_catalog_offset_compares_the_kept_position_with_the_header_centre():
    centre = {"objid": "g0", "ra": 150.0, "dec": -1.5}
    assert catalog_offset({"ra": "150.0", "dec": "-1.5"}, centre) == pytest.approx(0.0, abs=1e-6)
    assert catalog_offset({"RA": "150.0", "Dec": "-1.49875"}, centre) == pytest.approx(4.5, abs=1e-6)  # any case
    assert catalog_offset({"ra": " 151 ", "dec": "-1.5"}, centre) == pytest.approx(3598.8, abs=0.1)  # cos(dec)
    assert catalog_offset({"ra": "359.99", "dec": "0"}, {"ra": 0.01, "dec": 0.0}) == pytest.approx(72.0)  # wraps
    # sexagesimal (RA in hours), VizieR's names, a unit in hours or radians: the same position
    for columns, units in [({"ra": "10:00:00", "dec": "-01:30:00"}, {}), ({"RAJ2000": "150", "DEJ2000": "-1.5"}, {}),
                           ({"RA": "10.0", "DEC": "-1.5"}, {"RA": "hourangle", "DEC": "deg"}),
                           ({"ra": "2.6179938779914944", "dec": "-0.02617993877991494"}, {"ra": "rad", "dec": "rad"})]:
        assert catalog_offset(columns, centre, units) == pytest.approx(0.0, abs=1e-3), columns
    for units in ({"ra": "DEG", "dec": "degrees"}, {"ra": "deg", "dec": "deg"}):  # FITS and other spellings
        assert catalog_offset({"ra": "150", "dec": "-1.5"}, centre, units) == pytest.approx(0.0, abs=1e-3), units
    assert catalog_offset({"ra": "10", "dec": "-1.5"}, centre, {"ra": "h"}) == pytest.approx(0.0, abs=1e-3)
    assert catalog_offset({"ra": "150:00:00", "dec": "-1:30:00"}, centre, {"ra": "deg"}) == pytest.approx(0, abs=1e-3)
    assert catalog_offset({"ra": "150d00m00s", "dec": "-1d30m00s"}, centre) == pytest.approx(0.0, abs=1e-3)
    unreadable = [{"ra": "", "dec": "-1.5"}, {"ra": "nan", "dec": "-1.5"}, {"ra": "150.0", "dec": "91.5"},
                  {"ra": "north", "dec": "-1.5"}]
    assert [catalog_offset(columns, centre) for columns in unreadable] == [False] * len(unreadable)
    assert catalog_offset({"ra": "150", "dec": "-1.5"}, centre, {"ra": "mag"}) is False  # not an angle
    assert catalog_offset({"ra": "150.0"}, centre) is None and catalog_offset({"redshift": "0.1"}, centre) is None
    for columns in ({"RA": "151", "Dec": "-1.5", "ra": "150.0", "dec": "-1.5"},  # beside the header's (Decoded.of)
                    {"ra": "150.0", "dec": "-1.5", "RA": "151", "Dec": "-1.5"}):
        assert catalog_offset(columns, centre) == pytest.approx(3598.8, abs=0.1)  # the kept RA, not the header's
    assert catalog_offset({"ra": "150.0", "dec": "-1.5"}, {"objid": "g0"}) is None  # no header centre


def test_off_centre_rows_count_beyond_the_tolerance_and_merge_in_order():
    centre = {"ra": 150.0, "dec": 0.0}

    def at(arcsec):
        return {"ra": "150.0", "dec": repr(arcsec / 3600)}

    first, second = OffCentreRows(), OffCentreRows()
    first.add("a", at(MAX_CATALOG_OFFSET - 1e-6), centre)  # at the tolerance: the same object
    first.add("b", at(312.44), centre)
    second.add("c", at(12.0), centre)
    second.add("d", at(7.0), centre)
    second.add("x", {"ra": "", "dec": "0"}, centre)
    first.merge(second)
    assert (first.count, round(first.largest, 2), first.ids, first.unread) == (3, 312.44, ["b", "c", "d"], 1)
    assert first.warnings() == [
        "3 rows: the catalog's position is more than 5 arcsec from the cutout centre in the FITS header (largest "
        "5.2 arcmin: ids b, c, d): the classification is of the object at the cutout centre; check the catalog's "
        "positions and its path column",
        "1 row: the catalog's position could not be compared with the cutout centre (a missing value, a Dec beyond "
        "90, or a unit that is not an angle)"]
    first.add("e", at(6.0), centre)
    assert first.count == 4 and first.ids == ["b", "c", "d"] and "ids b, c, d, ...)" in first.warnings()[0]
    assert OffCentreRows().warnings() == []


def _survey(tmp_path, swap=True, odd=False, names=("RA", "Dec")):
    """Six WCS cutouts and a catalog naming them with their ra/dec: g1's and g2's paths swapped
    (`swap`), g3 3 arcsec from its centre (the same object); with `odd`, g4's position sexagesimal
    and g5's missing."""
    positions = _fits_cutouts(tmp_path / "cutouts", n_files=6)
    ids = sorted(positions)
    files = [str(tmp_path / "cutouts" / f"{i}.fits") for i in ids]
    if swap:
        files[1], files[2] = files[2], files[1]
    ra = [repr(positions[i][0]) for i in ids]
    dec = [repr(positions[i][1] + (3 / 3600 if i == "g3" else 0)) for i in ids]
    if odd:
        ra[4], dec[4] = "10:16:00.0", "+00:30:00"
        ra[5] = dec[5] = ""
    with open(tmp_path / "survey.csv", "w") as fh:
        fh.write(f"objid,file,{names[0]},{names[1]}\n" + "".join(f"{i},{f},{r},{d}\n" for i, f, r, d in zip(ids, files, ra, dec)))
    return tmp_path / "survey.csv", ra, dec


def _off_centre_lines(caplog):
    return [r.getMessage() for r in caplog.records if "the cutout centre" in r.getMessage()]


@pytest.mark.parametrize("decoder", ["reference", "auto"])
def test_a_catalog_row_naming_another_cutout_is_warned_of_and_written_as_before(tmp_path, caplog, decoder):
    survey, ra, dec = _survey(tmp_path, odd=True)
    args = ["classify", "--catalog", survey, "-o", tmp_path / "plain.csv", "-q", "--backend", "onnxruntime",
            "--decoder", decoder]
    assert invoke(*args).exit_code == 0
    assert _off_centre_lines(caplog) == []  # nothing kept: nothing to compare
    args[4] = tmp_path / "kept.csv"
    result = invoke(*args, "--keep-columns", "RA,Dec")
    assert result.exit_code == 0, result.output  # a warning, not a failure
    assert _off_centre_lines(caplog) == [
        "2 rows: the catalog's position is more than 5 arcsec from the cutout centre in the FITS header (largest "
        "1.12 deg: ids g1, g2): the classification is of the object at the cutout centre; check the catalog's "
        "positions and its path column",  # g3 is 3 arcsec off, g4's sexagesimal position is its own
        "1 row: the catalog's position could not be compared with the cutout centre (a missing value, a Dec beyond "
        "90, or a unit that is not an angle)"]  # g5's is missing
    plain, kept = Table.read(tmp_path / "plain.csv"), Table.read(tmp_path / "kept.csv", format="ascii.csv",
                                                                  converters={"RA": str, "Dec": str})
    assert list(kept["id"]) == list(plain["id"]) == ["g0", "g1", "g2", "g3", "g4", "g5"]
    for name in ("path", "p_elliptical", "p_spiral", "label"):
        assert list(kept[name]) == list(plain[name])
    assert [str(v) if v else "" for v in kept["RA"].filled("")] == ra  # the catalog's, as before
    assert [str(v) if v else "" for v in kept["Dec"].filled("")] == dec


def test_a_position_under_vizier_names_is_compared_too(tmp_path, caplog):
    """A kept RAJ2000/DEJ2000 was never compared: the header's ra/dec, added to the row's columns,
    came first and matched itself."""
    survey, _, _ = _survey(tmp_path, names=("RAJ2000", "DEJ2000"))
    result = invoke("classify", "--catalog", survey, "--keep-columns", "RAJ2000,DEJ2000", "-o", tmp_path / "out.csv",
                    "-q", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in _off_centre_lines(caplog)] == ["2 rows"]
    assert "ids g1, g2" in _off_centre_lines(caplog)[0]


def test_a_catalog_matching_its_cutouts_gives_no_warning(tmp_path, caplog):
    survey, _, _ = _survey(tmp_path, swap=False)
    result = invoke("classify", "--catalog", survey, "--keep-columns", "RA,Dec", "-o", tmp_path / "out.fits", "-q",
                    "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert _off_centre_lines(caplog) == []
    assert Table.read(tmp_path / "out.fits")["Dec"][3] == pytest.approx(-1.5 + 1.5 + 3 / 3600)  # g3's own, kept


def test_the_warning_is_one_stderr_line_and_the_exit_status_stays(tmp_path):
    """As a user runs it: one WARNING line on stderr beside the summary, exit 0, the catalog written."""
    import sys

    survey, _, _ = _survey(tmp_path)
    out = tmp_path / "out.parquet"
    run = subprocess.run([sys.executable, "-m", "galaxy.cli", "classify", "--catalog", str(survey), "--keep-columns",
                          "RA,Dec", "-o", str(out), "-q", "--backend", "onnxruntime"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [
        "WARNING engine.run: 2 rows: the catalog's position is more than 5 arcsec from the cutout centre in the FITS "
        "header (largest 1.12 deg: ids g1, g2): the classification is of the object at the cutout centre; "
        "check the catalog's positions and its path column"]
    assert len(Table.read(out)) == 6


@pytest.mark.parametrize("names", [("ra", "dec"), ("RA", "Dec")])
def test_a_kept_position_has_the_unit_its_catalog_gives_it_or_none(tmp_path, names):
    """A kept lowercase ra/dec from a CSV (which has no units) was given deg, the unit of the FITS
    headers' position, while a kept RA/Dec got none: units come from the input catalog."""
    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    Table({"file": [str(f) for f in files], names[0]: [10.5, 11.0], names[1]: [-1.0, 2.0]}).write(
        tmp_path / "in.csv", format="ascii.csv")
    out = tmp_path / "out.fits"
    assert invoke("classify", "--catalog", tmp_path / "in.csv", "--keep-columns", ",".join(names), "-o", out,
                  "-q").exit_code == 0
    table = Table.read(out)
    assert table[names[0]].unit is None and table[names[1]].unit is None
    survey = Table({"file": [str(f) for f in files], names[0]: [10.5, 11.0], names[1]: [-1.0, 2.0]})
    survey[names[0]].unit = survey[names[1]].unit = "deg"
    survey.write(tmp_path / "in.ecsv")
    out = tmp_path / "out2.fits"
    assert invoke("classify", "--catalog", tmp_path / "in.ecsv", "--keep-columns", ",".join(names), "-o", out,
                  "-q").exit_code == 0
    assert str(Table.read(out)[names[0]].unit) == "deg"
