"""Every catalog describes itself in full, in a form its usual reader sees."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from galaxy.catalog.written import read_catalog_metadata
from galaxy.catalog.write import CatalogWriter

METADATA = {"run": json.dumps({"weights": "ab" * 32, "tta": False}), "model": "sdss-xception-96",
            "weights": "ab" * 32, "temp": "0.899", "spec": json.dumps({"size": 96, "crop_fraction": 0.5}),
            "version": "galaxy-engine 0.1.0", "backend": "torch bf16", "device": "cpu",
            "command": "galaxy classify cutouts/ -o catalog.fits", "config": json.dumps({"inputs": ["cutouts/"]}),
            "date": "2026-11-28T09:00:00", "cwd": "/data/survey"}


def _write(path):
    writer = CatalogWriter(path, ("elliptical", "spiral"), METADATA, extra=(("ra", "float"),))
    writer.write(["g1"], ["a.jpeg"], np.array([[0.2, 0.8]], np.float32), [{"ra": "10.5"}])
    writer.close()
    return path


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".parquet", ".fits"])
def test_every_format_gives_back_all_its_metadata(tmp_path, suffix):
    path = _write(tmp_path / f"c{suffix}")
    assert read_catalog_metadata(path) == METADATA  # FITS too: command, date, device, version, spec


def test_astropy_reads_the_metadata_of_a_parquet_catalog(tmp_path):
    from astropy.table import Table

    table = Table.read(_write(tmp_path / "c.parquet"))
    assert {k: table.meta[k] for k in METADATA} == METADATA
    assert str(table["ra"].unit) == "deg" and list(table["id"]) == ["g1"]


def test_the_csv_sidecar_stores_json_as_json(tmp_path):
    _write(tmp_path / "c.csv")
    sidecar = json.loads((tmp_path / "c.csv.meta.json").read_text())
    assert sidecar["spec"] == {"size": 96, "crop_fraction": 0.5} and sidecar["run"]["tta"] is False
    assert sidecar["temp"] == 0.899 and sidecar["command"] == METADATA["command"]


def test_the_report_of_a_fits_catalog_shows_how_it_was_made(tmp_path):
    from galaxy.evaluation.report import report

    page = report(_write(tmp_path / "c.fits"), tmp_path / "r.html").read_text()
    for key in ("model", "weights", "backend", "command", "date", "device", "version", "spec"):
        assert f"<th>{key}</th>" in page, key
    assert "galaxy classify cutouts/ -o catalog.fits" in page


@pytest.mark.parametrize("good", [1, 0])  # 0: every input failed, a catalog without rows
def test_astropy_reads_a_classified_parquet_catalog_without_guessing(tmp_path, good):
    import shutil
    import warnings

    from astropy.table import Table
    from click.testing import CliRunner

    from galaxy.cli import cli
    from tests.conftest import EXAMPLES

    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:good]:
        shutil.copy(path, folder / "a-long-name-for-the-path-column.jpeg")
    (folder / "broken.jpeg").write_bytes(b"not a jpeg")
    out = tmp_path / "c.parquet"
    CliRunner().invoke(cli, ["classify", str(folder), "-o", str(out), "-q"], catch_exceptions=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy warns "No table::len::id found in metadata" and guesses
        table = Table.read(out)
    assert len(table) == good
    if good:
        assert table["path"][0] == str(folder / "a-long-name-for-the-path-column.jpeg") and table["label"][0]


# Column descriptions: each format's usual reader sees what a column means.
CLASSES = ("elliptical", "spiral")
OWN = {"id": "unique id of the galaxy in this catalog", "path": "image file the galaxy was classified from",
       "p_elliptical": "calibrated probability of class elliptical",
       "p_spiral": "calibrated probability of class spiral", "label": "class with the highest probability (p_<class>)",
       "ra": "ICRS RA of the cutout centre (FITS header)", "dec": "ICRS Dec of the cutout centre (FITS header)"}
# a survey's own words for a kept column: longer than a FITS card, and not ASCII
LONG = "spectroscopic redshift from the SDSS DR17 specObj table, heliocentric, with its flags ignored; é"


def _write_described(path, keep=("z", "objtype"), sky=("ra", "dec")):
    metadata = {**METADATA, "run": json.dumps({"keep": list(keep)})}
    extra = [(name, "float") for name in (*keep, *sky)]
    writer = CatalogWriter(path, CLASSES, metadata, extra=extra, text_lengths={"id": 2, "path": 6},
                           units={"RA": "deg"}, descriptions={"z": LONG, "RA": "right ascension, J2000"})
    writer.write(["g1"], ["a.jpeg"], np.array([[0.2, 0.8]], np.float32), [{name: "1.5" for name, _ in extra}])
    writer.close()
    return path


@pytest.mark.parametrize("suffix", [".ecsv", ".parquet", ".fits"])
def test_astropy_reads_every_columns_description(tmp_path, suffix):
    from astropy.table import Table

    table = Table.read(_write_described(tmp_path / f"c{suffix}"))
    expected = {**OWN, "z": LONG if suffix != ".fits" else LONG.replace("é", "\\xe9"), "objtype": None}
    assert {name: table[name].description for name in table.colnames} == expected
    assert table.colnames == ["id", "path", "p_elliptical", "p_spiral", "label", "z", "objtype", "ra", "dec"]
    assert str(table["ra"].unit) == "deg" and table["p_spiral"][0] == np.float32(0.8)


def test_a_kept_sky_column_keeps_its_own_description_not_the_headers(tmp_path):
    """A kept `RA` replaces the FITS headers' ra: it is the input catalog's, described by it (or not at all)."""
    from astropy.table import Table

    table = Table.read(_write_described(tmp_path / "c.ecsv", keep=("RA", "Dec")))
    assert table.colnames == ["id", "path", "p_elliptical", "p_spiral", "label", "RA", "Dec"]
    assert (table["RA"].description, table["Dec"].description) == ("right ascension, J2000", None)


def test_the_csv_sidecar_describes_every_column_in_order(tmp_path):
    _write_described(tmp_path / "c.csv")
    columns = json.loads((tmp_path / "c.csv.meta.json").read_text())["columns"]
    assert list(columns) == ["id", "path", "p_elliptical", "p_spiral", "label", "z", "objtype", "ra", "dec"]
    assert {name: c.get("description") for name, c in columns.items()} == {**OWN, "z": LONG, "objtype": None}
    assert columns["ra"]["unit"] == columns["dec"]["unit"] == "deg" and "unit" not in columns["id"]
    assert read_catalog_metadata(tmp_path / "c.csv") == {**METADATA, "run": json.dumps({"keep": ["z", "objtype"]})}


def test_parquet_fields_carry_their_description_for_pyarrow_readers(tmp_path):
    import pyarrow.parquet as pq

    schema = pq.read_schema(_write_described(tmp_path / "c.parquet"))
    assert schema.field("p_spiral").metadata == {b"description": OWN["p_spiral"].encode()}
    assert schema.field("z").metadata[b"description"].decode() == LONG and schema.field("objtype").metadata is None


def test_fits_columns_are_described_in_tcomm_and_the_ttype_comment(tmp_path):
    from astropy.io import fits

    header = fits.getheader(_write_described(tmp_path / "c.fits"), 1)
    assert [header.get(f"TCOMM{n}") for n in range(1, 10)] == [
        *(OWN[name] for name in ("id", "path", "p_elliptical", "p_spiral", "label")), LONG.replace("é", "\\xe9"),
        None, OWN["ra"], OWN["dec"]]
    assert header.comments["TTYPE4"] == OWN["p_spiral"] and header.comments["TTYPE7"] == ""
    assert header.comments["TTYPE6"] == "spectroscopic redshift from the SDSS DR17..."  # as much as fits the card
    assert header["LONGSTRN"] == "OGIP 1.0"  # TCOMM6 continues on CONTINUE cards
    for card in header.cards:
        image = card.image
        assert len(image) % 80 == 0 and all(" " <= c <= "~" for c in image), image


def _fits_tool(name):
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed (Debian: apt-get install {name})")


@_fits_tool("fitsverify")
def test_a_described_fits_catalog_passes_fitsverify(tmp_path):
    result = subprocess.run(["fitsverify", str(_write_described(tmp_path / "c.fits"))], capture_output=True, text=True)
    assert "0 warning(s) and 0 error(s)" in result.stdout, result.stdout


@_fits_tool("stilts")
def test_stilts_shows_each_fits_columns_description(tmp_path):
    """STILTS (and TOPCAT, on the same library) shows TCOMMn as a column's description."""
    path = _write_described(tmp_path / "c.fits")
    result = subprocess.run(["stilts", "tpipe", f"in={path}", "omode=meta"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = dict(re.findall(r"^\s*\d+: (\w+)\(\w+\)(?:/\S+)? - (.*)$", result.stdout, re.MULTILINE))
    assert shown == {**OWN, "z": LONG.replace("é", "\\xe9"), "objtype": ""}, result.stdout


@pytest.mark.parametrize("suffix", [".fits", ".csv"])
def test_a_catalog_records_the_decoder_that_ran_and_the_libraries_versions(tmp_path, suffix):
    """The metadata named `--decoder auto` only, and the galaxy version alone, though an int8 model is
    rebuilt by the local ONNX Runtime and its probabilities depend on it."""
    import onnxruntime
    from click.testing import CliRunner

    from galaxy.catalog.written import read_catalog_metadata
    from galaxy.cli import cli
    from tests.conftest import EXAMPLES

    out = tmp_path / f"c{suffix}"
    assert CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", str(out), "-q", "--decoder", "reference",
                                    "--backend", "onnxruntime"]).exit_code == 0
    metadata = read_catalog_metadata(out)
    software = metadata["software"] if isinstance(metadata["software"], dict) else json.loads(metadata["software"])
    assert metadata["decoder"] == "reference" and software["onnxruntime"] == onnxruntime.__version__
