"""The FITS catalog passes HEASARC's fitsverify and reads back in astropy with its metadata."""

import shutil
import subprocess

import numpy as np
import pytest
from astropy.table import Table

from galaxy.catalog.write import CatalogWriter


def write_catalog(path, n=20000):
    rng = np.random.default_rng(0)
    writer = CatalogWriter(path, ("elliptical", "spiral"), {"model": "m", "weights": "a" * 64,
                                                             "spec": "{" + "x" * 300 + "}", "date": "2026-11-27T12:00:00"})
    p = rng.random(n).astype(np.float32)
    probs = np.stack([1 - p, p], axis=1)
    for start in range(0, n, 1000):
        stop = min(n, start + 1000)
        ids = [f"obj{i}" for i in range(start, stop)]
        paths = [f"/data/cut/obj{i}.jpeg" if i % 7 else f"/data/café/obj{i}.jpeg" for i in range(start, stop)]
        paths[-1] = f"/data/tab\there/new\nline{stop}.jpeg"  # control characters are not FITS text either
        writer.write(ids, paths, probs[start:stop])
    writer.close()
    return probs


def test_fits_catalog_round_trip(tmp_path):
    path = tmp_path / "c.fits"
    probs = write_catalog(path)
    table = Table.read(path)
    assert len(table) == 20000 and table.colnames == ["id", "path", "p_elliptical", "p_spiral", "label"]
    np.testing.assert_array_equal(np.asarray(table["p_spiral"]), probs[:, 1])
    assert table["path"][7] == "/data/caf\\xe9/obj7.jpeg"  # FITS text is ASCII
    assert table["path"][999] == "/data/tab\\x09here/new\\x0aline1000.jpeg"
    assert list(table["label"][:3]) == [("spiral" if p > 0.5 else "elliptical") for p in probs[:3, 1]]
    assert table.meta["WEIGHTS"] == "a" * 64 and len(table.meta["SPEC"]) == 302
    assert not list(tmp_path.glob(".*"))  # spool and temporary files are gone


@pytest.mark.skipif(shutil.which("fitsverify") is None, reason="fitsverify is not installed (apt-get install fitsverify)")
def test_fitsverify_finds_no_problem(tmp_path):
    path = tmp_path / "c.fits"
    write_catalog(path, n=100)
    result = subprocess.run(["fitsverify", str(path)], capture_output=True, text=True)
    assert "0 warning(s) and 0 error(s)" in result.stdout, result.stdout


@pytest.mark.parametrize("at", [59, 65, 66, 67, 133, -1])
def test_long_texts_with_a_quote_anywhere_are_valid_fits(tmp_path, at):
    """astropy continued a long text by cutting a doubled quote in two ('xx'&' then '' y...): fitsverify
    refused the card, for a description or a command with an apostrophe at place 66; and a long text
    ending in "&" lost it (read as a continuation)."""
    text = "x" * at + "'" + " y" * 60 if at >= 0 else "a" * 68 + "&"
    path = tmp_path / "c.fits"
    writer = CatalogWriter(path, ("elliptical", "spiral"), {"model": "m", "command": f"galaxy classify {text}"},
                           extra=[("r50", "float")], descriptions={"r50": text})
    writer.write(["a"], ["a.jpeg"], np.array([[0.3, 0.7]], np.float32), [{"r50": "1.5"}])
    writer.close()
    table = Table.read(path)
    assert table["r50"].description == text and table.meta["COMMAND"] == f"galaxy classify {text}"
    from astropy.io import fits

    assert fits.getheader(path, 1)["TCOMM6"] == text
    # each 80-character card of those texts holds whole quotes (a doubled quote cut in two leaves an odd count):
    # checked here whether or not fitsverify is installed
    raw = path.read_bytes()
    cards = [raw[i:i + 80].decode("latin-1") for i in range(0, len(raw) - len(raw) % 80, 80)]  # data blocks too
    texts = [card for card in cards if card.startswith(("TCOMM6", "CONTINUE", "COMMAND"))]
    assert texts and all(card.split(" /")[0].count("'") % 2 == 0 for card in texts), texts
    if not shutil.which("fitsverify"):
        pytest.skip("fitsverify is not installed: the card check above ran, fitsverify's did not")
    result = subprocess.run(["fitsverify", str(path)], capture_output=True, text=True)
    assert "0 warning(s) and 0 error(s)" in result.stdout, result.stdout
