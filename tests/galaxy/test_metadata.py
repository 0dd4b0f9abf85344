"""Every catalog describes itself in full, in a form its usual reader sees."""

import json

import numpy as np
import pytest

from galaxy.catalog.read import read_catalog_metadata
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
